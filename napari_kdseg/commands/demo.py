"""``kdseg demo``: the end-to-end distillation demo on the synthetic multi-site phantom."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_kdseg.commands import EXIT_OK, EXIT_STOPPED, Subcommands


def register(commands: Subcommands) -> None:
    demo = commands.add_parser(
        "demo",
        help="end to end on the phantom: teacher, student w/o and w/ distillation, "
        "scored on an unseen site, with a report",
    )
    demo.add_argument("out", type=Path, nargs="?", default=Path("demo"), help="(default ./demo)")
    demo.add_argument("--target", default="B", help="the unseen site (default B)")
    demo.add_argument("--teacher", default="unetpp", help="teacher (default unetpp)")
    demo.add_argument("--student", default="enet", help="student (default enet)")
    demo.add_argument("--cases-per-site", type=int, default=5)
    demo.add_argument("--epochs", type=int, default=8)
    demo.add_argument("--size", type=int, default=64, help="model grid (default 64)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from napari_kdseg.demo import DemoSettings, run_demo
    from napari_kdseg.evaluation.protocol import GridStopped, check_models
    from napari_kdseg.training.progress import emit

    check_models([args.teacher], [args.student])
    if args.target not in "ABCDEF" or len(args.target) != 1:
        raise ValueError(f"--target must be one of the phantom's sites A-F, got {args.target!r}")
    settings = DemoSettings(
        target=args.target,
        teacher=args.teacher,
        student=args.student,
        cases_per_site=args.cases_per_site,
        grid_size=args.size,
        epochs=args.epochs,
        seed=args.seed,
    )
    try:
        report = run_demo(args.out, settings, on_event=emit)
    except GridStopped as stopped:
        emit("stopped", reason=str(stopped))
        return EXIT_STOPPED
    print(report.read_text())
    return EXIT_OK
