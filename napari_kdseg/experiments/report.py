"""Grid results as the paper lays them out: CSV files, markdown tables and bar plots.

Table 2 rows: each teacher (``T1: DeepLabV3+``, ``T2: UNet++``), then per student its
baseline (``ENet: w/o``) and one ``Tk: w/`` row per teacher it was distilled from.
Table 4 rows: the teacher, the student alone, then ``+LM`` ... ``+AAM + KMM + LM``.
Columns are the target sites and their mean. Cells show mean ± std over the target's cases.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_kdseg.architectures import DISPLAY_NAMES
from napari_kdseg.core.atomic import versioned_path
from napari_kdseg.experiments.grid import CellResult, ablation_losses, losses_label

METRIC_TITLES = {"dice": "Dice", "hd95": "HD95 (mm)", "asd": "ASD (mm)"}
# The paper numbers DeepLabV3+ as T1 and UNet++ as T2.
TEACHER_ORDER = ("deeplabv3plus", "unetpp")


def write_results_csv(results: Sequence[CellResult], path: Path) -> Path:
    """One row per cell: what was trained, how, and its summary metrics on the target."""
    fields = ["target", "model", "role", "teacher", "variant", "cases"]
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
    fields = ["target", "model", "teacher", "variant", "site", "case", *METRIC_TITLES]
    with versioned_path(path) as written, written.tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for result in results:
            cell = result.cell
            for case in result.evaluation["cases"]:
                writer.writerow(
                    {
                        "target": cell.target,
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


def markdown_table(
    rows: list[tuple[str, list[CellResult]]], targets: Sequence[str], metric: str = "dice"
) -> str:
    """A markdown table of ``metric`` with one column per target site and their mean."""
    digits = 3 if metric == "dice" else 2
    header = f"| {METRIC_TITLES[metric]} | " + " | ".join(targets) + " | mean |"
    lines = [header, "|---" * (len(targets) + 2) + "|"]
    for label, cells in rows:
        by_target = {r.cell.target: r.summary(metric) for r in cells}
        values = []
        texts = []
        for target in targets:
            summary = by_target.get(target)
            if summary is None or summary["mean"] is None:
                texts.append("–")
                continue
            values.append(summary["mean"])
            text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
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
        by_target = {r.cell.target: r.summary(metric) for r in cells}
        means = [_number(by_target.get(t, {}).get("mean")) for t in targets]
        errors = [_number(by_target.get(t, {}).get("std")) for t in targets]
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
        "largest connected component; HD95 and ASD are undefined (undef.) for an empty "
        "prediction and left out of the mean."
    )
    table = out / f"{layout}.md"
    with versioned_path(table) as written:
        written.tmp.write_text("\n".join(sections) + "\n")
    return {
        "results": write_results_csv(results, out / "results.csv"),
        "cases": write_cases_csv(results, out / "cases.csv"),
        "table": written.path,
        "plot": plot_rows(rows, targets, out / f"{layout}.png", title=PLOT_TITLES[layout]),
    }
