"""Evaluation commands: ``kdseg evaluate`` (one model), ``kdseg loso`` (the paper's Table 2)
and ``kdseg ablate`` (its Table 4)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from napari_kdseg.commands import EXIT_OK, EXIT_STOPPED, Subcommands
from napari_kdseg.commands.training import (
    add_config_arguments,
    add_lambdas_argument,
    add_losses_argument,
    add_progress_argument,
    config_from_arguments,
    lambdas_from_arguments,
)

if TYPE_CHECKING:
    from napari_kdseg.evaluation.evaluate import CaseResult, Evaluation
    from napari_kdseg.experiments.grid import Cell


def register(commands: Subcommands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="per-case and per-site Dice, HD95 and ASD of a trained model on chosen sites",
    )
    evaluate.add_argument("model", type=Path, help="trained model (.keras with its card, or .onnx)")
    evaluate.add_argument("dataset", type=Path, help="dataset root or site folder")
    evaluate.add_argument("--sites", nargs="+", help="sites to score (default all)")
    evaluate.add_argument("--tta", action="store_true", help="average over in-plane flips")
    evaluate.add_argument("--cache-dir", type=Path)
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(run=_evaluate)

    loso = commands.add_parser(
        "loso",
        help="Table 2: per target site, teachers and students (w/o and w/ distillation) "
        "trained on the other sites and scored on it",
    )
    _grid_arguments(loso)
    loso.add_argument(
        "--teachers",
        nargs="+",
        help="teacher models (default deeplabv3plus unetpp, or only those of --teacher-file)",
    )
    loso.add_argument(
        "--students", nargs="+", default=["enet", "espnet", "erfnet"], help="student models"
    )
    loso.add_argument(
        "--teacher-file",
        type=Path,
        nargs="+",
        default=[],
        help="teachers trained elsewhere (.keras with its card), used instead of training "
        "their architecture; they should not have seen the target site",
    )
    add_losses_argument(
        loso,
        "*",
        "distillation losses of the w/ students (default the paper's three; none: students alone)",
    )
    add_lambdas_argument(loso)
    loso.add_argument(
        "--export-to",
        type=Path,
        help="model library folder: export every trained student there as ONNX",
    )
    loso.set_defaults(run=_loso)

    ablate = commands.add_parser(
        "ablate",
        help="Table 4: a student with every combination of LM, AAM and KMM, per target site",
    )
    _grid_arguments(ablate)
    ablate.add_argument("--teacher", default="deeplabv3plus", help="teacher (paper: DeepLabV3+)")
    ablate.add_argument("--student", default="enet", help="student (paper: ENet)")
    ablate.set_defaults(run=_ablate)


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="dataset root with two or more site folders")
    parser.add_argument("--targets", nargs="+", help="target sites (default every site)")
    add_config_arguments(parser)
    parser.add_argument(
        "--student-epochs",
        type=int,
        help="epochs for the students (default: the same as the teachers)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train every cell once per seed (its teacher with the same seed) and report "
        "means over seeds and paired gains with 95%% intervals (default: one run, --seed)",
    )
    add_progress_argument(parser)
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="grid folder; running again skips finished cells and resumes the rest",
    )


def _evaluate(args: argparse.Namespace) -> int:
    from napari_kdseg.data.cache import PreprocessCache
    from napari_kdseg.data.datasets import discover
    from napari_kdseg.evaluation.evaluate import evaluate_model
    from napari_kdseg.inference.loading import load_model

    dataset = discover(args.dataset)
    for site in args.sites or []:
        dataset.site(site)
    model = load_model(args.model)
    on_case = None if args.json else _print_case
    if on_case is not None:
        print(f"{'site':<8}{'case':<14}{'Dice':>7}{'HD95 mm':>10}{'ASD mm':>9}{'s':>7}")
    evaluation = evaluate_model(
        model, dataset, args.sites, PreprocessCache(args.cache_dir), args.tta, on_case
    )
    if args.json:
        print(json.dumps(evaluation.to_json(), indent=2))
    else:
        print(format_summary(evaluation))
    return EXIT_OK


def _print_case(result: CaseResult) -> None:
    scores = result.scores
    print(
        f"{result.site:<8}{result.case:<14}{scores.dice:>7.3f}{_mm(scores.hd95):>10}"
        f"{_mm(scores.asd):>9}{result.seconds:>7.1f}",
        flush=True,
    )


def _mm(value: float | None) -> str:
    return "undef." if value is None or math.isnan(value) else f"{value:.2f}"


def format_summary(evaluation: Evaluation) -> str:
    """Per-site and overall mean ± std of each metric."""
    lines = ["", f"{'site':<8}{'cases':>6}{'Dice':>16}{'HD95 mm':>16}{'ASD mm':>16}"]
    summaries = [(site, evaluation.site_summary(site)) for site in evaluation.sites]
    summaries.append(("all", evaluation.overall()))
    for site, summary in summaries:
        cells = []
        for metric in ("dice", "hd95", "asd"):
            part = summary[metric]
            text = "–" if part["mean"] is None else f"{part['mean']:.3f} ± {part['std']:.3f}"
            if part["undefined"]:
                text += f" ({part['undefined']} undef.)"
            cells.append(f"{text:>16}")
        lines.append(f"{site:<8}{summary['dice']['n']:>6}" + "".join(cells))
    return "\n".join(lines)


def _loso(args: argparse.Namespace) -> int:
    from napari_kdseg.card import ModelCard
    from napari_kdseg.experiments.grid import check_models, loso_cells

    given = [str(ModelCard.read_beside(path).architecture) for path in args.teacher_file]
    default = given or ["deeplabv3plus", "unetpp"]
    teachers = list(dict.fromkeys([*given, *(args.teachers or default)]))
    check_models(teachers, args.students)
    return _run_grid(
        args,
        lambda targets: loso_cells(
            targets, teachers, args.students, args.losses, args.seeds or (None,)
        ),
    )


def _ablate(args: argparse.Namespace) -> int:
    from napari_kdseg.experiments.grid import ablation_cells, check_models

    check_models([args.teacher], [args.student])
    return _run_grid(
        args,
        lambda targets: ablation_cells(targets, args.teacher, args.student, args.seeds or (None,)),
    )


def _run_grid(args: argparse.Namespace, make_cells: Callable[[list[str]], list[Cell]]) -> int:
    from napari_kdseg.core.events import emit
    from napari_kdseg.data.cache import PreprocessCache
    from napari_kdseg.data.datasets import discover
    from napari_kdseg.experiments.grid import Grid, GridStopped, check_targets
    from napari_kdseg.experiments.report import write_grid_report

    dataset = discover(args.dataset)
    targets = args.targets or dataset.site_names
    check_targets(dataset, targets)
    student = config_from_arguments(args, "enet")
    if args.student_epochs is not None:
        student = dataclasses.replace(student, epochs=args.student_epochs)
    if getattr(args, "lambdas", None):
        distillation = dataclasses.replace(
            student.distillation, lambdas=lambdas_from_arguments(args)
        )
        student = dataclasses.replace(student, distillation=distillation)
    grid = Grid(
        dataset,
        args.out,
        config_from_arguments(args, "unetpp"),
        student,
        PreprocessCache(args.cache_dir),
        teacher_files=getattr(args, "teacher_file", ()),
        progress_every=args.progress_every,
    )
    cells = make_cells(targets)
    try:
        results = grid.run(cells)
    except GridStopped as stopped:
        emit("stopped", reason=str(stopped))
        return EXIT_STOPPED
    layout = "table2" if args.command == "loso" else "table4"
    paths = write_grid_report(results, targets, args.out, layout)
    emit("report", **{name: str(path) for name, path in paths.items()})
    if getattr(args, "export_to", None) is not None:
        from napari_kdseg.export.students import export_students

        export_students(results, dataset, args.export_to)
    print(paths["table"].read_text())
    return EXIT_OK
