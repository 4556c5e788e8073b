"""``kdseg demo``: the end-to-end distillation demo on the synthetic multi-site phantom."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from napari_kdseg.commands import EXIT_OK, EXIT_STOPPED, Subcommands
from napari_kdseg.commands.console import add_event_output_arguments


def register(commands: Subcommands) -> None:
    demo = commands.add_parser(
        "demo",
        help="end to end on the phantom: teacher, student w/o and w/ distillation, "
        "scored on an unseen site, with a report",
    )
    demo.add_argument("out", type=Path, nargs="?", default=Path("demo"), help="(default ./demo)")
    # Unset options keep DemoSettings' defaults (F, unetpp, enet, 4 cases, 6 and 12 epochs,
    # 64 px, seeds 0 1 2).
    demo.add_argument("--target", help="the unseen site")
    demo.add_argument("--teacher", help="teacher architecture")
    demo.add_argument("--student", help="student architecture")
    demo.add_argument("--cases-per-site", type=int)
    demo.add_argument("--teacher-epochs", type=int)
    demo.add_argument("--student-epochs", type=int)
    demo.add_argument("--grid-size", type=int, help="model grid")
    demo.add_argument("--seed", type=int)
    demo.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train every model once per seed and give the gain's interval over seeds and "
        "cases (default 0 1 2; each seed adds a whole run's time)",
    )
    add_event_output_arguments(demo)
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from napari_kdseg.core.events import emit
    from napari_kdseg.data.phantom.sites import SITES
    from napari_kdseg.experiments.demo import DemoSettings, run_demo
    from napari_kdseg.experiments.grid import GridStopped, check_models

    chosen = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(DemoSettings)
        if getattr(args, field.name, None) is not None
    }
    if "seeds" in chosen:
        chosen["seeds"] = tuple(dict.fromkeys(chosen["seeds"]))
    settings = DemoSettings(**chosen)
    check_models([settings.teacher], [settings.student])
    if settings.target not in SITES:
        raise ValueError(
            f"--target must be one of the phantom's sites {', '.join(SITES)}, "
            f"got {settings.target!r}"
        )
    try:
        report = run_demo(args.out, settings)
    except GridStopped as stopped:
        emit("stopped", reason=str(stopped))
        return EXIT_STOPPED
    print(report.read_text())
    return EXIT_OK
