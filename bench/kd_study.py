"""What a distillation grid shows: per target and seed, the teacher's margin over the student,
the distilled student's gain, the validation Dice of the training sites (the only score that
may choose settings) and each term's share of the distilled student's loss over training.

Reads a finished ``kdseg loso`` folder (one or more seeds); it trains nothing itself.
``--gradients`` also measures each term's share of the gradient norm on the student's weights,
on one training batch, for a freshly initialised student (the first step) and for the
trained one (the last):

    .venv/bin/kdseg phantom runs/phantom --cases-per-site 4 --size 96
    .venv/bin/kdseg loso runs/phantom --targets F --teachers unetpp --students enet \\
        --size 64 --epochs 6 --student-epochs 12 --seeds 0 1 2 --out runs/study-F
    .venv/bin/python bench/kd_study.py runs/study-F [--gradients]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from napari_kdseg.card import ModelCard
from napari_kdseg.distillation import terms
from napari_kdseg.experiments.grid import CellResult
from napari_kdseg.experiments.report import gain_rows, table2_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="a finished kdseg loso folder")
    parser.add_argument(
        "--gradients", action="store_true", help="also each term's share of the gradient norm"
    )
    parser.add_argument("--cache-dir", type=Path, help="preprocessing cache (default: kdseg's)")
    args = parser.parse_args()
    results = [
        CellResult.from_json(json.loads(path.read_text()))
        for path in sorted(
            {*args.grid.glob("*/*/result.json"), *args.grid.glob("*/seed*/*/result.json")}
        )
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

    print("\n## Validation Dice by student epochs (best up to epoch k, mean over runs)")
    print(
        "The cyclic rate's period is fixed in steps, not in epochs, so the first k epochs of a "
        "seeded run are exactly a k-epoch run: its best validation Dice so far is that run's."
    )
    epochs = _epoch_curves(by_run)
    if epochs:
        checkpoints = sorted({k for k in (3, 6, 9, 12, 18, 24) if k <= epochs["max"]})
        print("| student | " + " | ".join(f"k = {k}" for k in checkpoints) + " |")
        print("|---|" + "---|" * len(checkpoints))
        for kind in ("w/o", "w/"):
            values = [np.mean([curve[:k].max() for curve in epochs[kind]]) for k in checkpoints]
            print(f"| {kind} | " + " | ".join(f"{v:.3f}" for v in values) + " |")

    if args.gradients:
        print("\n## Each term's share of the gradient norm on the student (lambda x term)")
        print(f"| target | seed | Seg first / last | {header} |")
        print("|---|---|---|" + "---|" * len(names))
        for (target, seed), run in sorted(by_run.items(), key=lambda item: str(item[0])):
            if "w/" not in run:
                continue
            shares = _gradient_shares(args.grid, run["w/"], args.cache_dir)
            cells = [f"{shares[k][0]:.2f} / {shares[k][1]:.2f}" for k in ("segmentation", *names)]
            print(f"| {target} | {seed} | " + " | ".join(cells) + " |", flush=True)


def _gradient_shares(
    grid: Path, result: CellResult, cache_dir: Path | None
) -> dict[str, tuple[float, float]]:
    """Share of the summed gradient norms of each weighted term, for a fresh student (first)
    and the trained one (last), on the first training batch of the run's own seed."""
    import dataclasses

    import keras
    import tensorflow as tf

    from napari_kdseg.data.cache import PreprocessCache
    from napari_kdseg.data.datasets import discover
    from napari_kdseg.losses import SegmentationLoss
    from napari_kdseg.models import build_model
    from napari_kdseg.training.config import TrainConfig
    from napari_kdseg.training.distiller import Distiller
    from napari_kdseg.training.pipeline import SliceDataset
    from napari_kdseg.training.run import load_split

    pinned = json.loads((grid / "grid.json").read_text())
    cell = result.cell
    config = TrainConfig.from_json(pinned["student"])
    config = dataclasses.replace(
        config,
        model=cell.model,
        seed=config.seed if cell.seed is None else cell.seed,
        distillation=config.distillation.only(cell.losses),
    )
    card = ModelCard.read_beside(Path(result.model_path))
    cases, _ = load_split(
        discover(pinned["dataset"]), list(card.training_sites or ()), config,
        PreprocessCache(cache_dir),
    )  # fmt: skip
    x, y = SliceDataset(cases, config.batch_size, config.preprocess.context, seed=config.seed)[0]
    teacher_path = Path(result.model_path).parents[1] / cell.teacher / f"{cell.teacher}.keras"
    teacher = keras.saving.load_model(teacher_path, compile=False)
    keras.utils.set_random_seed(config.seed)
    fresh = build_model(config.model, card.input_shape, len(card.class_names or ()), config.width)
    trained = keras.saving.load_model(result.model_path, compile=False)
    segmentation = SegmentationLoss(kind=config.segmentation_loss)
    norms: dict[str, list[float]] = defaultdict(list)
    for student in (fresh, trained):
        distiller = Distiller(teacher, student, config.distillation, segmentation)
        with tf.GradientTape(persistent=True) as tape:
            outputs = distiller(x, training=True)
            weighted = {
                "segmentation": distiller.segmentation_loss.batch_loss(y, outputs["logits"])
            } | {
                name: distiller.lambdas[name] * term(outputs["student"], outputs["teacher"])
                for name, term in distiller.terms.items()
            }
        for name, value in weighted.items():
            gradients = tape.gradient(value, student.trainable_weights)
            norms[name].append(
                float(tf.linalg.global_norm([g for g in gradients if g is not None]))
            )
        del tape
    totals = [sum(values[i] for values in norms.values()) for i in (0, 1)]
    return {
        name: (
            norms[name][0] / totals[0] if name in norms else np.nan,
            norms[name][1] / totals[1] if name in norms else np.nan,
        )
        for name in ("segmentation", *[spec.name for spec in terms.registered()])
    }


def _epoch_curves(by_run: dict[tuple, dict[str, CellResult]]) -> dict[str, Any]:
    """Per-epoch validation Dice of every complete run's students, from their ``log.csv``."""
    curves: dict[str, Any] = {"w/o": [], "w/": []}
    for run in by_run.values():
        if not {"w/o", "w/"} <= set(run):
            continue
        for kind in ("w/o", "w/"):
            with (Path(run[kind].model_path).parent / "log.csv").open() as handle:
                rows = list(csv.DictReader(handle))
            curves[kind].append(np.array([float(row["val_dice"]) for row in rows]))
    if not curves["w/"]:
        return {}
    curves["max"] = min(len(curve) for curve in [*curves["w/o"], *curves["w/"]])
    return curves


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
