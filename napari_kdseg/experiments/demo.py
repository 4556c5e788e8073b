"""The end-to-end demo on the synthetic phantom, sized for a laptop CPU.

1. write the six-site phantom;
2. leave one site out: train a teacher on the other five sites, and one student twice, alone
   (w/o) and distilled from that teacher with AAM, KMM and LM (w/);
3. score all three on every case of the unseen site (Dice, HD95, ASD on the source grid);
4. write a report: the table, per-case Dice, a contour figure of every target case (ground
   truth red, prediction green), the settings and the wall time of each stage.

Whatever the run gives is what the report says: nothing is selected or tuned after the fact.
Running it again reuses what is finished (the phantom, the cache, the grid's cells and the
stage times) and leaves an unchanged report alone; a report that would differ is written as
``report-2.md``, never over the first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_kdseg.architectures import DISPLAY_NAMES
from napari_kdseg.core.atomic import atomic_path, versioned_path
from napari_kdseg.core.events import emit
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.distillation import terms
from napari_kdseg.evaluation.figures import ContourRow, contour_figure
from napari_kdseg.experiments.grid import Cell, CellResult, Grid, losses_label
from napari_kdseg.experiments.report import (
    METRIC_TITLES,
    gain_rows,
    markdown_table,
    table2_rows,
    target_summary,
)
from napari_kdseg.training.config import TrainConfig, cpu_preset


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs; the defaults finish within 15 minutes on 2 CPU cores.

    The unseen site is F (1.5 T, endorectal coil): in ``bench/site_shift.py`` a model trained
    on the other five sites loses 0.28 Dice there against held-out cases of its own sites, a
    real gap that is not a collapse (A and E lose about 0.7; B, C and D at most 0.07). Three
    seeds, because one run's noise is as large as the effect under study.
    """

    target: str = "F"
    teacher: str = "unetpp"
    student: str = "enet"
    cases_per_site: int = 4
    phantom_size: int = 96
    grid_size: int = 64
    teacher_epochs: int = 6
    student_epochs: int = 12
    seed: int = 0
    #: Several seeds: every model trained once per seed, and the gain's interval over them;
    #: empty trains once, with ``seed``.
    seeds: tuple[int, ...] = (0, 1, 2)

    def train_config(self, role: str) -> TrainConfig:
        """The CPU preset for ``role`` at the demo's grid size and epochs."""
        base = cpu_preset(self.teacher if role == "teacher" else self.student)
        return dataclasses.replace(
            base,
            preprocess=dataclasses.replace(base.preprocess, size=self.grid_size),
            epochs=self.teacher_epochs if role == "teacher" else self.student_epochs,
            seed=self.seed,
        )

    def cells(self) -> list[Cell]:
        """Teacher, student alone and distilled student, once per seed."""
        return [
            cell
            for seed in (self.seeds or (None,))
            for cell in (
                Cell(self.target, self.teacher, seed=seed),
                Cell(self.target, self.student, seed=seed),
                Cell(self.target, self.student, self.teacher, terms.PAPER_TERMS, seed=seed),
            )
        ]


def run_demo(
    out: Path,
    settings: DemoSettings | None = None,
) -> Path:
    """Run every stage into ``out`` and return the path of ``report.md``; progress goes out
    through :func:`~napari_kdseg.core.events.emit`."""
    settings = settings or DemoSettings()
    timings = _StageTimes(out / "timings.json")

    with timings.stage("phantom"):
        data = generate_phantom(
            out / "data",
            cases_per_site=settings.cases_per_site,
            size=settings.phantom_size,
            seed=settings.seed,
        )
    emit("stage_done", stage="phantom", seconds=timings.seconds["phantom"], path=str(data))

    dataset = discover(data)
    cache = PreprocessCache(out / "cache")
    grid = Grid(
        dataset,
        out / "grid",
        settings.train_config("teacher"),
        settings.train_config("student"),
        cache,
    )
    results = []
    for cell in settings.cells():
        emit("cell", target=cell.target, model=cell.model, variant=cell.variant)
        result = grid.run_cell(cell)
        # The cell keeps its own times, so a rerun that reuses it reports the original run.
        timings.record(_cell_label(cell), result.train_seconds + result.evaluate_seconds)
        results.append(result)

    first_seed = results[:3]  # the figure, the export and the per-case table show one run
    with timings.stage("figure"):
        figure = _contours(
            first_seed[1:], dataset.cases([settings.target]), cache, out / "contours.png"
        )
    with timings.stage("export student to ONNX"):
        exported = _export(first_seed[2], dataset.cases([settings.target])[0], out)
    emit("artifact", kind="onnx", path=str(exported["path"]))
    report = _write_report(out, settings, results, timings.seconds, figure, exported)
    emit("report", path=str(report), total_seconds=round(sum(timings.seconds.values()), 1))
    return report


class _StageTimes:
    """Seconds of each demo stage, kept in ``path`` from the run that first finished it:
    a rerun reuses finished stages, and its report should neither claim they took no time
    nor differ from the first run's (a changed report is written as a new version)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}
        self._recorded = json.loads(path.read_text()) if path.is_file() else {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.record(name, self._recorded.get(name, time.perf_counter() - started))

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(seconds, 1)
        self._recorded[name] = self.seconds[name]
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self._recorded, indent=2))


def _cell_label(cell: Cell) -> str:
    seed = "" if cell.seed is None else f" (seed {cell.seed})"
    if cell.role == "teacher":
        return f"train + evaluate teacher {DISPLAY_NAMES[cell.model]}{seed}"
    return f"train + evaluate student {DISPLAY_NAMES[cell.model]} {cell.variant}{seed}"


def _contours(
    students: list[CellResult], cases: list[Any], cache: PreprocessCache, path: Path
) -> Path:
    """Every target case, one column per student (w/o, w/), on its source grid."""
    from napari_kdseg.inference.loading import load_model
    from napari_kdseg.inference.segment import segment_prepared

    columns = [result.cell.variant for result in students]
    models = {result.cell.variant: load_model(Path(result.model_path)) for result in students}
    rows = []
    for case in cases:
        scan, truth = read_volume(case.image), read_volume(case.label, labels=True)
        predictions = {}
        for variant, model in models.items():
            prepared = cache.prepare(case, model.preprocess)
            predictions[variant] = segment_prepared(prepared.image, prepared.geometry, model).labels
        rows.append(ContourRow(f"{case.site}/{case.id}", scan.array, truth.array, predictions))
    return contour_figure(rows, path, columns)


def _export(distilled: CellResult, case: Any, out: Path) -> dict[str, Any]:
    """The distilled student as ONNX, checked on a real scan of the unseen site; a file left
    by an earlier run is kept (its embedded card records its own check)."""
    from napari_kdseg.export.onnx_export import export_onnx
    from napari_kdseg.inference.onnx_runtime import load_onnx

    path = out / f"{distilled.cell.model}-distilled.onnx"
    if path.exists():
        check = load_onnx(path).card.get("export", {}).get("check", {})
        return {"path": path, "max_abs_difference": check.get("max_abs_difference")}
    report = export_onnx(Path(distilled.model_path), path, check_inputs=read_volume(case.image))
    return {"path": path, "max_abs_difference": report.max_abs_difference}


def _write_report(
    out: Path,
    settings: DemoSettings,
    results: list[CellResult],
    seconds: dict[str, float],
    figure: Path,
    exported: dict[str, Any],
) -> Path:
    targets = [settings.target]
    rows = table2_rows(results)
    teacher, alone, distilled = (target_summary(row, settings.target, "dice") for _, row in rows)
    gain = gain_rows(rows, targets)[0][1][settings.target]
    runs = len(settings.seeds) or 1
    first_seed = results[:3]
    config = settings.train_config("student")
    losses, lambdas = first_seed[2].cell.losses, config.distillation.lambdas
    lines = [
        "# napari-kdseg demo: distillation on the synthetic multi-site phantom",
        "",
        f"Leave one site out: every model is trained on sites other than **{settings.target}** "
        f"and scored on all {first_seed[1].summary()['n']} cases of site {settings.target}, which "
        "it never saw. "
        f"Teacher {DISPLAY_NAMES[settings.teacher]}, student {DISPLAY_NAMES[settings.student]}, "
        f"distilled with {losses_label(first_seed[2].cell.losses).removeprefix('+')} (weights "
        f"{', '.join(f'{terms.get(name).short_name} {lambdas[name]:g}' for name in losses)}).",
        "",
    ]
    for metric in METRIC_TITLES:
        lines += [markdown_table(rows, targets, metric), ""]
    lines += [
        "Distillation changed the student's Dice on the unseen site by "
        f"{gain.sentence() if gain else 'an amount no seed pairs could measure'} "
        f"({alone['mean']:.3f} without, {distilled['mean']:.3f} with); "
        f"the teacher scored {teacher['mean']:.3f}. "
        f"{'This is one small CPU run' if runs == 1 else f'These are {runs} small CPU runs'} "
        f"({settings.teacher_epochs} teacher and {settings.student_epochs} student epochs at "
        f"{settings.grid_size} x {settings.grid_size}, "
        f"{settings.cases_per_site} cases per site): read it as a working pipeline, not as a "
        "reproduction of the paper's numbers.",
        "",
        "## Per case (Dice)" + ("" if runs == 1 else f", seed {settings.seeds[0]}"),
        "",
        "| case | " + " | ".join(_column(r) for r in first_seed) + " |",
        "|---" * (len(first_seed) + 1) + "|",
    ]
    cases = [c["case"] for c in first_seed[1].evaluation["cases"]]
    for index, case in enumerate(cases):
        values = [f"{r.evaluation['cases'][index]['dice']:.3f}" for r in first_seed]
        lines.append(f"| {case} | " + " | ".join(values) + " |")
    lines += [
        "",
        f"![contours]({figure.name})",
        "",
        f"The distilled student is exported to `{exported['path'].name}` (ONNX, model card "
        "embedded; ONNX Runtime against Keras on a scan of the unseen site, max abs logit "
        f"difference {_difference(exported['max_abs_difference'])}). Segment a new scan with "
        f"`kdseg segment {exported['path'].name} SCAN --out mask.nii.gz`.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(
            {
                "demo": dataclasses.asdict(settings),
                "teacher training": settings.train_config("teacher").to_json(),
                "student training": config.to_json(),
            },
            indent=2,
        ),
        "```",
        "",
        "## Wall time",
        "",
        f"On {platform.machine()} with {_cpus()} CPU(s), Python {platform.python_version()}:",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {stage} | {value:.1f} |" for stage, value in seconds.items()]
    lines.append(f"| **total** | **{sum(seconds.values()):.1f}** |")
    with versioned_path(out / "report.md") as written:
        written.tmp.write_text("\n".join(lines) + "\n")
    return written.path


def _difference(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.1e}"


def _column(result: CellResult) -> str:
    cell = result.cell
    if cell.role == "teacher":
        return f"teacher {DISPLAY_NAMES[cell.model]}"
    return f"{DISPLAY_NAMES[cell.model]} {cell.variant}"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
