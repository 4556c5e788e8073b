"""What a distillation grid shows: per target and seed, the teacher's margin over the student,
the distilled student's gain, the validation Dice of the training sites (the only score that
may choose settings) and each term's share of the distilled student's loss over training.

Reads a finished ``kdseg loso`` folder (one or more seeds); it trains nothing itself:

    .venv/bin/kdseg phantom runs/phantom --cases-per-site 4 --size 96
    .venv/bin/kdseg loso runs/phantom --targets F --teachers unetpp --students enet \\
        --size 64 --epochs 6 --student-epochs 12 --seeds 0 1 2 --out runs/study-F
    .venv/bin/python bench/kd_study.py runs/study-F
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_kdseg.card import ModelCard
from napari_kdseg.distillation import terms
from napari_kdseg.experiments.grid import CellResult
from napari_kdseg.experiments.report import gain_rows, table2_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="a finished kdseg loso folder")
    args = parser.parse_args()
    results = [
        CellResult.from_json(json.loads(path.read_text()))
        for path in sorted(args.grid.rglob("result.json"))
    ]
    if not results:
        raise SystemExit(f"{args.grid}: no finished cells (result.json) in this folder")
    targets = sorted({r.cell.target for r in results})

    print("## Unseen-site Dice per seed (teacher, student alone, distilled) and validation")
    print("| target | seed | teacher | w/o | w/ | teacher - w/o | w/ - w/o | val T / w/o / w/ |")
    print("|---|---|---|---|---|---|---|---|")
    by_run: dict[tuple, dict[str, CellResult]] = defaultdict(dict)
    for result in results:
        cell = result.cell
        kind = "teacher" if cell.role == "teacher" else ("w/" if cell.losses else "w/o")
        by_run[cell.target, cell.seed][kind] = result
    for (target, seed), run in sorted(by_run.items(), key=lambda item: str(item[0])):
        if len(run) < 3:
            continue
        dice = {kind: run[kind].summary()["mean"] for kind in ("teacher", "w/o", "w/")}
        validation = " / ".join(f"{_validation_dice(run[k]):.3f}" for k in ("teacher", "w/o", "w/"))
        print(
            f"| {target} | {seed} | {dice['teacher']:.3f} | {dice['w/o']:.3f} | "
            f"{dice['w/']:.3f} | {dice['teacher'] - dice['w/o']:+.3f} | "
            f"{dice['w/'] - dice['w/o']:+.3f} | {validation} |"
        )

    print("\n## Paired gain w/ - w/o (Dice), 95% bootstrap interval over seeds x cases")
    for label, by_target in gain_rows(table2_rows(results), targets):
        for key, gain in by_target.items():
            if gain is not None:
                print(
                    f"- {label}, {'all targets' if key == 'all' else 'target ' + key}: "
                    f"{gain.sentence()}"
                )

    print("\n## Each term's share of the distilled student's loss (lambda x term / total)")
    names = [spec.name for spec in terms.registered()]
    header = " | ".join(f"{terms.get(n).short_name} first / last" for n in names)
    print(f"| target | seed | Seg first / last | {header} |")
    print("|---|---|---|" + "---|" * len(names))
    for (target, seed), run in sorted(by_run.items(), key=lambda item: str(item[0])):
        if "w/" not in run:
            continue
        shares = _loss_shares(Path(run["w/"].model_path))
        cells = [f"{shares[k][0]:.2f} / {shares[k][1]:.2f}" for k in ("segmentation", *names)]
        print(f"| {target} | {seed} | " + " | ".join(cells) + " |")


def _validation_dice(result: CellResult) -> float:
    """Best validation Dice on the training sites' held-out cases (from the model card)."""
    value = ModelCard.read_beside(Path(result.model_path)).best_val_dice
    return float("nan") if value is None else value


def _loss_shares(model_path: Path) -> dict[str, tuple[float, float]]:
    """Share of the total loss of each term (weighted) at the first and the last epoch."""
    losses = ModelCard.read_beside(model_path).losses or {}
    weights = {"segmentation": 1.0} | {
        name: float(weight) for name, weight in losses.items() if name != "segmentation"
    }
    with (model_path.parent / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    shares = {}
    for name in ("segmentation", *[spec.name for spec in terms.registered()]):
        if name not in rows[0]:
            shares[name] = (np.nan, np.nan)
            continue
        first, last = (
            weights.get(name, 0.0) * float(row[name]) / float(row["loss"])
            for row in (rows[0], rows[-1])
        )
        shares[name] = (first, last)
    return shares


if __name__ == "__main__":
    main()
