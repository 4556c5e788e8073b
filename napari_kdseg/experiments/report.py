"""Grid results as the paper lays them out: CSV files, markdown tables and bar plots.

Table 2 rows: each teacher (``T1: DeepLabV3+``, ``T2: UNet++``), then per student its
baseline (``ENet: w/o``) and one ``Tk: w/`` row per teacher it was distilled from.
Table 4 rows: the teacher, the student alone, then ``+LM`` ... ``+AAM + KMM + LM``.
Columns are the target sites and their mean. Cells show mean ± std over the target's cases,
or, where a cell was trained with several seeds, the mean over seeds of each run's mean ± its
std over seeds. Every distilled row also gets its gain over the student alone, paired by seed
and case, with a 95% bootstrap interval (:mod:`napari_kdseg.experiments.statistics`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_kdseg.architectures import DISPLAY_NAMES
from napari_kdseg.core.atomic import versioned_path
from napari_kdseg.experiments.grid import CellResult, ablation_losses, losses_label
from napari_kdseg.experiments.statistics import PairedGain, mean_and_std, paired_gain

METRIC_TITLES = {"dice": "Dice", "hd95": "HD95 (mm)", "asd": "ASD (mm)"}
# The paper numbers DeepLabV3+ as T1 and UNet++ as T2.
TEACHER_ORDER = ("deeplabv3plus", "unetpp")


def write_results_csv(results: Sequence[CellResult], path: Path) -> Path:
    """One row per cell: what was trained, how, and its summary metrics on the target."""
    fields = ["target", "seed", "model", "role", "teacher", "variant", "cases"]
    for metric in METRIC_TITLES:
        fields += [f"{metric}_mean", f"{metric}_std", f"{metric}_undefined"]
    fields += ["train_seconds", "evaluate_seconds", "model_path"]
    with versioned_path(path) as written, written.tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for result in results:
            cell = result.cell
            row: dict[str, object] = {
                "target": cell.target,
                "seed": _plain(cell.seed),
                "model": cell.model,
                "role": cell.role,
                "teacher": cell.teacher or "",
                "variant": cell.variant,
                "cases": result.summary()["n"],
            }
            for metric in METRIC_TITLES:
                summary = result.summary(metric)
                row[f"{metric}_mean"] = _plain(summary["mean"])
                row[f"{metric}_std"] = _plain(summary["std"])
                row[f"{metric}_undefined"] = summary["undefined"]
            row |= {
                "train_seconds": result.train_seconds,
                "evaluate_seconds": result.evaluate_seconds,
                "model_path": result.model_path,
            }
            writer.writerow(row)
    return written.path


def write_cases_csv(results: Sequence[CellResult], path: Path) -> Path:
    """One row per (cell, case): the per-case metrics behind every summary."""
    fields = ["target", "seed", "model", "teacher", "variant", "site", "case", *METRIC_TITLES]
    with versioned_path(path) as written, written.tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for result in results:
            cell = result.cell
            for case in result.evaluation["cases"]:
                writer.writerow(
                    {
                        "target": cell.target,
                        "seed": _plain(cell.seed),
                        "model": cell.model,
                        "teacher": cell.teacher or "",
                        "variant": cell.variant,
                    }
                    | {key: _plain(value) for key, value in case.items()}
                )
    return written.path


def _plain(value: object) -> object:
    return "" if value is None else value


def _teacher_labels(results: Sequence[CellResult]) -> dict[str, str]:
    present = {r.cell.model for r in results if r.cell.role == "teacher"}
    present |= {r.cell.teacher for r in results if r.cell.teacher}
    ordered = [t for t in TEACHER_ORDER if t in present]
    return {name: f"T{TEACHER_ORDER.index(name) + 1}" for name in ordered}


def table2_rows(results: Sequence[CellResult]) -> list[tuple[str, list[CellResult]]]:
    """(row label, the cells of that row across targets) in the paper's Table 2 order."""
    labels = _teacher_labels(results)
    rows: list[tuple[str, list[CellResult]]] = []
    for teacher, label in labels.items():
        cells = [r for r in results if r.cell.model == teacher and r.cell.teacher is None]
        rows.append((f"{label}: {DISPLAY_NAMES[teacher]}", cells))
    students = list(dict.fromkeys(r.cell.model for r in results if r.cell.role == "student"))
    for student in students:
        alone = [r for r in results if r.cell.model == student and not r.cell.losses]
        rows.append((f"{DISPLAY_NAMES[student]}: w/o", alone))
        for teacher, label in labels.items():
            distilled = [
                r
                for r in results
                if r.cell.model == student and r.cell.teacher == teacher and r.cell.losses
            ]
            if distilled:
                rows.append((f"{label}: w/", distilled))
    return rows


def table4_rows(results: Sequence[CellResult]) -> list[tuple[str, list[CellResult]]]:
    """(row label, cells) in the paper's Table 4 order: teacher, student, the ablations (the
    paper's seven, then those of terms registered beside its three)."""
    rows: list[tuple[str, list[CellResult]]] = []
    teachers = [r for r in results if r.cell.role == "teacher"]
    if teachers:
        rows.append((f"Teacher: {DISPLAY_NAMES[teachers[0].cell.model]}", teachers))
    alone = [r for r in results if r.cell.role == "student" and not r.cell.losses]
    if alone:
        rows.append((f"Student: {DISPLAY_NAMES[alone[0].cell.model]}", alone))
    for losses in ablation_losses():
        variant = losses_label(losses)
        cells = [r for r in results if r.cell.losses and r.cell.variant == variant]
        if cells:
            rows.append((variant, cells))
    return rows


def target_summary(cells: Sequence[CellResult], target: str, metric: str) -> dict[str, Any]:
    """``metric`` of a row's cells on ``target``: one run's mean ± std over the cases, or the
    mean over seeds of each run's mean ± std over seeds; ``undefined`` counts cases without
    a value, ``seeds`` the runs."""
    runs = [r for r in cells if r.cell.target == target]
    if len(runs) == 1:
        return runs[0].summary(metric) | {"seeds": 1}
    means = [r.summary(metric)["mean"] for r in runs]
    defined = [m for m in means if m is not None]
    mean, std = mean_and_std(defined) if defined else (None, None)
    undefined = sum(r.summary(metric)["undefined"] for r in runs)
    return {"mean": mean, "std": std, "undefined": undefined, "seeds": len(runs)}


def gain_rows(
    rows: list[tuple[str, list[CellResult]]], targets: Sequence[str]
) -> list[tuple[str, dict[str, PairedGain | None]]]:
    """For each distilled row, its paired Dice gain over the same student alone on each
    target and on all of them together (key ``"all"``: every target's cases, paired by seed);
    None where the two have no seed in common."""
    gains = []
    for label, cells in rows:
        distilled = [r for r in cells if r.cell.losses]
        if not distilled:
            continue
        student = distilled[0].cell.model
        alone = [
            r
            for _, row in rows
            for r in row
            if r.cell.model == student and r.cell.role == "student" and not r.cell.losses
        ]
        by_target = {target: _paired(distilled, alone, [target]) for target in targets}
        gains.append((label, by_target | {"all": _paired(distilled, alone, targets)}))
    return gains


def _dice_by_run(results: Sequence[CellResult]) -> dict[tuple[Any, str], dict[Any, float]]:
    """(seed, target) -> {(site, case): Dice} of each run."""
    return {
        (r.cell.seed, r.cell.target): {
            (case["site"], case["case"]): case["dice"] for case in r.evaluation["cases"]
        }
        for r in results
    }


def _paired(
    distilled: Sequence[CellResult], alone: Sequence[CellResult], targets: Sequence[str]
) -> PairedGain | None:
    treated, baseline = _dice_by_run(distilled), _dice_by_run(alone)
    seeds = sorted(
        {seed for seed, _ in treated if all((seed, t) in treated for t in targets)}
        & {seed for seed, _ in baseline if all((seed, t) in baseline for t in targets)},
        key=lambda seed: -1 if seed is None else seed,
    )
    if not seeds:
        return None
    # The cases every run scored (a case left out, e.g. for an empty mask, is left out of all).
    cases = [
        (target, case)
        for target in targets
        for case in sorted(treated[seeds[0], target])
        if all(case in runs[seed, target] for runs in (treated, baseline) for seed in seeds)
    ]
    if not cases:
        return None
    with_scores = [[treated[seed, t][case] for t, case in cases] for seed in seeds]
    without_scores = [[baseline[seed, t][case] for t, case in cases] for seed in seeds]
    return paired_gain(with_scores, without_scores)


def gains_table(
    gains: list[tuple[str, dict[str, PairedGain | None]]], targets: Sequence[str]
) -> str:
    """The paired Dice gains as a markdown table: mean [95% interval] per target and for all."""
    header = "| Dice gain over w/o | " + " | ".join([*targets, "all targets"]) + " |"
    lines = [header, "|---" * (len(targets) + 2) + "|"]
    for label, by_target in gains:
        texts = []
        for key in [*targets, "all"]:
            gain = by_target.get(key)
            texts.append(
                "–" if gain is None else f"{gain.mean:+.3f} [{gain.low:+.3f}, {gain.high:+.3f}]"
            )
        lines.append(f"| {label} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def markdown_table(
    rows: list[tuple[str, list[CellResult]]], targets: Sequence[str], metric: str = "dice"
) -> str:
    """A markdown table of ``metric`` with one column per target site and their mean."""
    digits = 3 if metric == "dice" else 2
    header = f"| {METRIC_TITLES[metric]} | " + " | ".join(targets) + " | mean |"
    lines = [header, "|---" * (len(targets) + 2) + "|"]
    for label, cells in rows:
        values = []
        texts = []
        for target in targets:
            summary = target_summary(cells, target, metric)
            if summary["mean"] is None:
                texts.append("–")
                continue
            values.append(summary["mean"])
            text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
            if summary["seeds"] > 1:
                text += f" ({summary['seeds']} seeds)"
            if summary["undefined"]:
                text += f" ({summary['undefined']} undef.)"
            texts.append(text)
        mean = f"{np.mean(values):.{digits}f}" if len(values) == len(targets) else "–"
        lines.append(f"| {label} | " + " | ".join(texts) + f" | {mean} |")
    return "\n".join(lines)


def plot_rows(
    rows: list[tuple[str, list[CellResult]]],
    targets: Sequence[str],
    path: Path,
    metric: str = "dice",
    title: str = "",
) -> Path:
    """Grouped bars: one group per target site, one bar per table row, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(targets) + 2.5), 4.0), dpi=120)
    width = 0.8 / max(len(rows), 1)
    positions = np.arange(len(targets))
    for index, (label, cells) in enumerate(rows):
        summaries = [target_summary(cells, t, metric) for t in targets]
        means = [_number(summary["mean"]) for summary in summaries]
        errors = [_number(summary["std"]) for summary in summaries]
        axes.bar(
            positions + (index - (len(rows) - 1) / 2) * width,
            means,
            width,
            yerr=errors,
            label=label,
            capsize=2,
        )
    axes.set_xticks(positions, [f"target {t}" for t in targets])
    axes.set_ylabel(METRIC_TITLES[metric])
    if metric == "dice":
        axes.set_ylim(0, 1)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, ncol=2, loc="lower right" if metric == "dice" else "upper right")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    with versioned_path(path) as written:
        figure.savefig(written.tmp, format="png")
    plt.close(figure)
    return written.path


def _number(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


LAYOUTS = {"table2": table2_rows, "table4": table4_rows}
TITLES = {
    "table2": "Leave one site out: teachers, and students without (w/o) and with (w/) distillation",
    "table4": "Ablation of the distillation losses (leave one site out)",
}
PLOT_TITLES = {
    "table2": "Unseen target site: teachers, students w/o and w/ distillation",
    "table4": "Unseen target site: ablation of LM, AAM and KMM",
}


def write_grid_report(
    results: Sequence[CellResult], targets: Sequence[str], out: Path, layout: str
) -> dict[str, Path]:
    """``results.csv``, ``cases.csv``, ``<layout>.md`` (Dice, HD95, ASD) and ``<layout>.png``."""
    rows = LAYOUTS[layout](results)
    sections = [f"# {TITLES[layout]}", ""]
    for metric in METRIC_TITLES:
        sections += [markdown_table(rows, targets, metric), ""]
    sections.append(
        "Mean ± std over the target site's cases, 3D on the source grid after keeping the "
        "largest connected component (with several seeds: the mean over seeds of each run's "
        "mean ± std over seeds); HD95 and ASD are undefined (undef.) for an empty "
        "prediction and left out of the mean."
    )
    gains = gain_rows(rows, targets)
    if gains:
        sections += [
            "",
            "## Distilled against the student alone",
            "",
            gains_table(gains, targets),
            "",
            "Mean paired difference in Dice (w/ − w/o, same seed, same case) [95% bootstrap "
            "interval over seeds x cases; one seed varies only the cases].",
        ]
    table = out / f"{layout}.md"
    with versioned_path(table) as written:
        written.tmp.write_text("\n".join(sections) + "\n")
    return {
        "results": write_results_csv(results, out / "results.csv"),
        "cases": write_cases_csv(results, out / "cases.csv"),
        "table": written.path,
        "plot": plot_rows(rows, targets, out / f"{layout}.png", title=PLOT_TITLES[layout]),
    }
