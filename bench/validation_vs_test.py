"""Does any validation figure of the phantom + real runs predict the real test scan? (issue 16)

Settings for the real-scan students are chosen by their validation Dice on the phantom's
held-out labelled cases; ``promise12_case00`` is scored and never used to choose. This reads
every exported student under ``RUNS`` (``*/*/seed*/*.onnx`` beside its card) that trained
with the phantom, rebuilds its validation split (the same ``split_cases`` and seed as its
run), and scores each held-out case by site. It then ranks the students three ways and
prints how well each ranking follows the test scan's Dice (Spearman), over all students and
within the 1 mm cluster (``pixel_mm`` set):

- the card's best validation Dice (what chose the settings);
- the mean Dice on the held-out cases of the phantom's endorectal-coil sites (B, E, F), the
  protocol of the test scan;
- the same on the other sites (A, C, D).

    .venv/bin/python bench/validation_vs_test.py runs/real runs/phantom
"""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from real_distill import TEST_SCAN, TEST_TRUTH  # the same test scan, beside this script
from scipy.stats import spearmanr

from napari_kdseg.data.datasets import Dataset, discover, split_cases
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.volume import Volume
from napari_kdseg.evaluation.metrics import dice
from napari_kdseg.inference.model import SegmentationModel
from napari_kdseg.inference.onnx_runtime import load_onnx
from napari_kdseg.inference.segment import segment

#: The phantom's sites that simulate an endorectal coil, as the test scan has.
COIL_SITES = ("B", "E", "F")
OTHER_SITES = ("A", "C", "D")


@cache
def held_out(
    phantom: Dataset, site: str, fraction: float, seed: int
) -> list[tuple[Volume, npt.NDArray[np.bool_]]]:
    """The scans and masks of ``site`` that a run with ``fraction`` and ``seed`` held out,
    read once for all the students that share the split."""
    _, held = split_cases(phantom.cases([site]), fraction, seed)
    return [(read_volume(c.image), read_volume(c.label, labels=True).array > 0) for c in held]


def held_out_dice(
    model: SegmentationModel, phantom: Dataset, sites: tuple[str, ...], fraction: float, seed: int
) -> float:
    """Mean Dice over the cases of ``sites`` that the run with ``seed`` held out."""
    scores = [
        dice(segment(scan, model, quality=False).labels > 0, mask)
        for site in sites
        for scan, mask in held_out(phantom, site, fraction, seed)
    ]
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder of bench/real_distill.py runs")
    parser.add_argument("phantom", type=Path, help="the phantom the runs trained with")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    phantom = discover(args.phantom)
    scan = read_volume(TEST_SCAN)
    truth = read_volume(TEST_TRUTH, labels=True).array > 0
    figures: list[tuple[float, float, float, float, bool]] = []
    print("| run | seed | best validation | coil sites | other sites | Case00 |")
    print("|---|---|---|---|---|---|")
    for model_path in sorted(args.runs.glob("*/*/seed*/*.onnx")):
        card = json.loads(model_path.with_suffix(".json").read_text())
        if not any(data["origin"] == "synthetic" for data in card["training_data"]):
            continue  # trained without the phantom: its validation is agreement with TAPS
        seed = card["training"]["seed"]
        model = load_onnx(model_path, threads=args.threads, providers=["CPUExecutionProvider"])
        fraction = card["training"]["validation_fraction"]
        coil = held_out_dice(model, phantom, COIL_SITES, fraction, seed)
        other = held_out_dice(model, phantom, OTHER_SITES, fraction, seed)
        test = dice(segment(scan, model, quality=False).labels > 0, truth)
        best = card["metrics"]["best_val_dice"]
        fixed_pixel = card["preprocess"].get("pixel_mm") is not None
        figures.append((best, coil, other, test, fixed_pixel))
        run = "/".join(model_path.parts[-4:-2])
        print(
            f"| {run} | {seed} | {best:.3f} | {coil:.3f} | {other:.3f} | {test:.3f} |", flush=True
        )

    table = np.array([f[:4] for f in figures])
    cluster = np.array([f[4] for f in figures])
    print(
        f"\nSpearman correlation with the Dice on Case00 ({len(table)} students; "
        f"{int(cluster.sum())} with a fixed pixel size):"
    )
    for column, name in enumerate(["best validation", "coil sites", "other sites"]):
        overall = spearmanr(table[:, column], table[:, 3])[0]
        within = spearmanr(table[cluster, column], table[cluster, 3])[0]
        print(f"- {name}: {overall:+.2f} over all, {within:+.2f} within the 1 mm cluster")


if __name__ == "__main__":
    main()
