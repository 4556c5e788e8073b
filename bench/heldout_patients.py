"""Leave one patient out of the real scans: does the 1 mm recipe's student agree with TAPS on
a patient of the training protocol that it never saw? (issue 16)

``promise12_case00`` is the only real scan with a ground truth, and its protocol (1.5 T,
endorectal coil) is one that no training scan has. This asks the complementary question, the
product's own case, where the clinic's unlabelled scans come from the scanner the student
will serve: for each of the five patients among the six real 3 T scans, a student trains
with the phantom and the real scans of the other four patients (the chosen recipe,
``bench/real_distill.py --phantom``), and its mask of the left-out patient's series is
compared with the mask TAPS's own command line wrote (``reference/taps/``). No series here
has a ground truth: this is how closely the student follows a real-data model that scores
0.896 against Case00's ground truth, not its accuracy.

Each fold's training data is a folder of links to the other patients' series folders, under
``OUT/PATIENT/data``; the arms and seeds are those of ``real_distill.py``. Also printed: each
fold's Dice on Case00, and with ``--compare`` the agreement of a student that trained on all
six scans (the recipe's own), which shows the gap between a seen and an unseen patient.

    .venv/bin/python bench/heldout_patients.py runs/heldout --phantom runs/phantom \\
        --arms "teacher labels" "teacher labels + LM + AAM" --seeds 0 1 --compare RECIPE.onnx

where ``RECIPE.onnx`` is the recipe's seed-0 teacher-labels student from ``real_distill.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
from real_distill import (  # the same arms, test scan and command line, beside this script
    ARMS,
    BASELINE,
    KDSEG,
    REAL,
    SHARED,
    TEST_SCAN,
    TEST_TRUTH,
    _folder_name,
    arm_options,
)
from taps_fidelity import on_grid, reference_scans

from napari_kdseg.card import ModelCard
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.volume import Volume
from napari_kdseg.evaluation.metrics import dice
from napari_kdseg.experiments.statistics import mean_and_std, paired_gain
from napari_kdseg.inference.model import SegmentationModel
from napari_kdseg.inference.onnx_runtime import load_onnx
from napari_kdseg.inference.segment import segment

#: The real sites whose series folders the folds are made of.
SITES = ("prostate3t_dicom", "prostatex_t2")
#: The recipe chosen on validation (bench/README.md, "A fixed pixel size is the lever").
RECIPE = ["--size", "128", "--epochs", "30", "--augment", "scanner-shift", "--pixel-mm", "1.0"]


def patient_of(reference_name: str) -> str:
    """``ProstateX-0001_s10`` -> ``ProstateX-0001``; ``Prostate3T-03-0001`` stays."""
    return reference_name.rpartition("_s")[0] if "_s" in reference_name else reference_name


def fold_data(out: Path, patient: str) -> list[Path]:
    """Site folders of links to every real case folder but ``patient``'s, made once."""
    sites = []
    for site in SITES:
        folder = out / patient / "data" / site
        folder.mkdir(parents=True, exist_ok=True)
        for case in sorted((REAL / site).iterdir()):
            link = folder / case.name
            if case.name != patient and not link.exists():
                link.symlink_to(case.resolve(), target_is_directory=True)
        sites.append(folder)
    return sites


def train_fold(out: Path, patient: str, phantom: Path, arm: str, seed: int) -> Path:
    """Train one fold's student unless it is there; its exported ONNX model."""
    run = out / patient / _folder_name(arm) / f"seed{seed}"
    if not (run / "enet.keras").is_file():
        line = [
            str(KDSEG), "distill", str(phantom), "--unlabelled", *map(str, fold_data(out, patient)),
            "--teacher", "taps", *RECIPE, *arm_options(arm, beside_phantom=True),
            "--seed", str(seed), "--out", str(run),
        ]  # fmt: skip
        print("$ " + " ".join(line[1:]), flush=True)
        started = time.perf_counter()
        subprocess.run(line, check=True, stdout=subprocess.DEVNULL)
        print(f"  {patient}, {arm}, seed {seed}: {time.perf_counter() - started:.0f} s")
    onnx_path = run / "enet.onnx"
    if not onnx_path.is_file():
        subprocess.run(
            [str(KDSEG), "export", str(run / "enet.keras"), "--out", str(onnx_path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return onnx_path


@cache
def student(model_path: Path, threads: int) -> SegmentationModel:
    """An exported student, loaded once for the series and Case00 it reads."""
    return load_onnx(model_path, threads=threads, providers=["CPUExecutionProvider"])


def mask_dice(model_path: Path, volume: Volume, truth: np.ndarray, threads: int) -> float:
    """Dice of the student's mask of ``volume`` against ``truth`` (on its grid)."""
    return dice(segment(volume, student(model_path, threads), quality=False).labels > 0, truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the folds")
    parser.add_argument("--phantom", type=Path, required=True, help="the phantom (kdseg phantom)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=[BASELINE])
    parser.add_argument("--compare", type=Path, help="a student that trained on all six scans")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    args = parser.parse_args()
    if not TEST_SCAN.is_file():
        raise SystemExit(f"{REAL}: the real scans are not here (../shared/data/real)")

    series = [(n, s, m) for n, s, m in reference_scans(SHARED / "data") if n != "promise12_Case00"]
    test_scan = read_volume(TEST_SCAN)
    truth = read_volume(TEST_TRUTH, labels=True).array > 0
    columns = [f"{arm}, seed {seed}" for arm in args.arms for seed in args.seeds]
    seen = ["trained on it (--compare)"] if args.compare else []
    print(f"recipe: {' '.join(RECIPE)}; Dice against TAPS's own mask\n")
    print("| held-out series | " + " | ".join(columns + seen) + " |")
    print("|---|" + "---|" * (len(columns) + len(seen)))
    # arm -> (seed, series) agreement, seeds as rows for the paired bootstrap
    unseen: dict[str, np.ndarray] = {
        arm: np.zeros((len(args.seeds), len(series))) for arm in args.arms
    }
    case00: dict[str, list[float]] = defaultdict(list)
    validation: dict[str, list[float]] = defaultdict(list)
    compared = []
    for column, (name, scan, reference) in enumerate(series):
        patient = patient_of(name)
        volume = read_volume(scan)
        taps_mask = on_grid(reference, volume)
        cells = []
        for arm in args.arms:
            for row, seed in enumerate(args.seeds):
                model_path = train_fold(args.out, patient, args.phantom, arm, seed)
                score = mask_dice(model_path, volume, taps_mask, args.threads)
                unseen[arm][row, column] = score
                cells.append(f"{score:.3f}")
        if args.compare:
            compared.append(mask_dice(args.compare, volume, taps_mask, args.threads))
            cells.append(f"{compared[-1]:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    for patient in sorted({patient_of(n) for n, _, _ in series}):
        for arm in args.arms:
            for seed in args.seeds:
                run = args.out / patient / _folder_name(arm) / f"seed{seed}"
                case00[arm].append(mask_dice(run / "enet.onnx", test_scan, truth, args.threads))
                validation[arm].append(ModelCard.read_beside(run / "enet.keras").best_val_dice)

    print(f"\nover {len(series)} held-out series and {len(args.seeds)} seed(s):")
    for arm in args.arms:
        per_seed = ", ".join(f"{m:.3f}" for m in unseen[arm].mean(axis=1))
        low, high = unseen[arm].min(), unseen[arm].max()
        print(
            f"- {arm}: agreement with TAPS {unseen[arm].mean():.3f} (per seed {per_seed}; "
            f"series {low:.3f}-{high:.3f})"
        )
    if args.compare:
        mean, std = mean_and_std(compared)
        print(f"- trained on every scan: {mean:.3f} +- {std:.3f} over the same series, seen")
    for arm in args.arms:
        if arm != BASELINE and BASELINE in args.arms:
            gain = paired_gain(unseen[arm], unseen[BASELINE])
            print(f"- {arm} - {BASELINE}, paired by series and seed: {gain.sentence()}")
    print("\neach fold's student on Case00 (ground truth) and its validation Dice (phantom):")
    for arm in args.arms:
        mean, std = mean_and_std(case00[arm])
        print(
            f"- {arm}: Case00 {mean:.3f} +- {std:.3f} over {len(case00[arm])} students; "
            f"validation {np.mean(validation[arm]):.3f}"
        )


if __name__ == "__main__":
    main()
