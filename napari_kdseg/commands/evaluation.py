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
from napari_kdseg.commands.console import add_event_output_arguments, aligned_table
from napari_kdseg.commands.training import (
    add_config_arguments,
    add_lambdas_argument,
    add_losses_argument,
    add_progress_argument,
    config_from_arguments,
    lambdas_from_arguments,
)

if TYPE_CHECKING:
    from rich.table import Table

    from napari_kdseg.evaluation.evaluate import Evaluation
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
    add_event_output_arguments(parser)
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="grid folder; running again skips finished cells and resumes the rest",
    )


def _evaluate(args: argparse.Namespace) -> int:
    from napari_kdseg.commands.console import counted, stdout_console
    from napari_kdseg.core.errors import report_data_warnings
    from napari_kdseg.data.cache import PreprocessCache
    from napari_kdseg.data.datasets import discover
    from napari_kdseg.evaluation.evaluate import evaluate_model
    from napari_kdseg.inference.loading import load_model

    dataset = discover(args.dataset)
    for site in args.sites or []:
        dataset.site(site)
    model = load_model(args.model)
    cache = PreprocessCache(args.cache_dir)
    if args.json:
        evaluation = evaluate_model(model, dataset, args.sites, cache, args.tta)
        print(json.dumps(evaluation.to_json(), indent=2))
        return EXIT_OK
    console = stdout_console()
    total = len(dataset.cases(args.sites))

    def warn(message: str) -> None:
        console.print(f"Warning: {message}", style="yellow", markup=False, soft_wrap=True)

    # The warnings come once the bar is gone, in words rather than as Python warnings.
    with report_data_warnings(warn), counted(console, total, "scored") as advance:
        evaluation = evaluate_model(
            model,
            dataset,
            args.sites,
            cache,
            args.tta,
            lambda result: advance(f"{result.site}/{result.case}"),
        )
    console.print(case_table(evaluation))
    console.print(summary_table(evaluation))
    return EXIT_OK


def case_table(evaluation: Evaluation) -> Table:
    """One row per case: Dice, HD95, ASD and the seconds it took."""
    table = aligned_table("site", "case", "Dice", "HD95 mm", "ASD mm", "s")
    for result in evaluation.cases:
        scores = result.scores
        table.add_row(
            result.site,
            result.case,
            f"{scores.dice:.3f}",
            _mm(scores.hd95),
            _mm(scores.asd),
            f"{result.seconds:.1f}",
        )
    return table


def _mm(value: float | None) -> str:
    return "undef." if value is None or math.isnan(value) else f"{value:.2f}"


def summary_table(evaluation: Evaluation) -> Table:
    """Per-site and overall mean ± std of each metric, and how many cases had no HD95/ASD."""
    summaries = [(site, evaluation.site_summary(site)) for site in evaluation.sites]
    summaries.append(("all", evaluation.overall()))
    undefined = any(s[m]["undefined"] for _, s in summaries for m in ("dice", "hd95", "asd"))
    headers = ["site", "cases", "Dice", "HD95 mm", "ASD mm"] + ["undefined"] * undefined
    table = aligned_table(*headers)
    if undefined:
        # A column of its own keeps the mean ± std columns narrow enough for 80 columns.
        table.caption = "undefined: cases left out of the means (an empty mask has no surface)"
    for site, summary in summaries:
        cells = [str(summary["dice"]["n"])]
        for metric in ("dice", "hd95", "asd"):
            part = summary[metric]
            cells.append("–" if part["mean"] is None else f"{part['mean']:.3f} ± {part['std']:.3f}")
        if undefined:
            counts = {summary[metric]["undefined"] for metric in ("hd95", "asd")}
            cells.append("/".join(str(count) for count in sorted(counts)))
        table.add_row(site, *cells)
    return table


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
