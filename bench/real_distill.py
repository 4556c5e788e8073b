"""Distil TAPS into a light student on unlabelled real scans, and measure it on the one real
scan with a ground truth (issue 16, "Done when").

Three arms, the same seeds, the same scans (every real scan in ``../shared/data/real`` except
``promise12_case00``, the test scan; none has a mask), each through the documented command
``kdseg distill ../shared/data/real --exclude promise12_case00 --teacher taps`` with:

- **teacher labels** (``--teacher-labels``): TAPS's thresholded masks as labels, the
  segmentation loss only; the baseline;
- **teacher labels + LM + AAM** (``--teacher-labels --losses logits affinity``): eq. 8 with
  TAPS's masks standing in for the missing ground truth, the relation terms from TAPS's
  cached probabilities (KMM needs features TAPS does not give);
- **LM + AAM, no labels** (``--logits-direction hinton``): the relation terms alone, as
  unlabelled scans train in a mixed run; LM in Hinton's direction, since the paper's settled
  on background everywhere here (validation agreement 0.09 against 0.63, seed 0).

With ``--phantom`` the phantom's labelled sites train beside the real scans, and the
relation arms read the real scans alone (``--distil-on unlabelled``): TAPS finds no gland on
most phantom sites. TAPS is then asked about the real scans only.

The validation Dice each run chose its epoch by is agreement with TAPS on its held-out real
scans (no scan has a mask), or with ``--phantom`` the Dice on the phantom's held-out labelled
cases; ``promise12_case00`` is used for the score only. Every student is
exported to ONNX and timed end to end on the test scan beside TAPS, on ONNX Runtime with the
same threads, in this run.

    .venv/bin/python bench/real_distill.py runs/real --seeds 0 1 2
    .venv/bin/python bench/real_distill.py runs/real --seeds 0 1 2 --report   # no training

Extra ``kdseg distill`` options for every arm after ``--``, for example
``-- --augment scanner-shift``; each set of options gets its own folder under ``OUT`` so
settings never mix.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from napari_kdseg.card import ModelCard
from napari_kdseg.data.io import read_volume
from napari_kdseg.evaluation.metrics import dice
from napari_kdseg.experiments.statistics import mean_and_std, paired_gain
from napari_kdseg.inference.onnx_runtime import load_onnx
from napari_kdseg.inference.segment import segment
from napari_kdseg.teachers.taps import TapsTeacher

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "data" / "real"
TEST_SCAN = REAL / "promise12_case00" / "Case00.nii.gz"
TEST_TRUTH = REAL / "promise12_case00" / "Case00_segmentation.nii.gz"
KDSEG = Path(sys.executable).with_name("kdseg")

#: Arm name -> the options that make it; the first is the baseline the others are paired with.
ARMS: dict[str, list[str]] = {
    "teacher labels": ["--teacher-labels"],
    "teacher labels + LM + AAM": ["--teacher-labels", "--losses", "logits", "affinity"],
    "LM + AAM, no labels": ["--logits-direction", "hinton"],
}
BASELINE = next(iter(ARMS))
#: The recipe both arms share unless options after ``--`` change it.
RECIPE = ["--size", "128", "--epochs", "60"]


def training_data(phantom: Path | None) -> list[str]:
    """The real scans without masks (the test scan left out); with ``phantom``, its labelled
    sites beside them."""
    if phantom is None:
        return [str(REAL), "--exclude", "promise12_case00"]
    unlabelled = [str(REAL / "prostate3t_dicom"), str(REAL / "prostatex_t2")]
    return [str(phantom), "--unlabelled", *unlabelled]


def arm_options(arm: str, beside_phantom: bool) -> list[str]:
    """The ``kdseg distill`` options of ``arm``. Beside the phantom, the relation terms read
    the real scans alone (``--distil-on unlabelled``): TAPS finds no gland on most phantom
    sites, so its maps there would teach the student wrong."""
    if beside_phantom and arm != BASELINE:
        return [*ARMS[arm], "--distil-on", "unlabelled"]
    return ARMS[arm]


def command(
    arm: str, seed: int, out: Path, options: list[str], phantom: Path | None = None
) -> list[str]:
    """The documented ``kdseg distill`` command line of one run."""
    return [
        str(KDSEG), "distill", *training_data(phantom), "--teacher", "taps",
        *RECIPE, *options, *arm_options(arm, phantom is not None),
        "--seed", str(seed), "--out", str(out),
    ]  # fmt: skip


def settings_folder(root: Path, options: list[str], phantom: Path | None = None) -> Path:
    """One folder per set of extra options (and training data), named by them and a short
    hash."""
    if phantom is not None:
        options = ["phantom", phantom.name, *options]
    if not options:
        return root / "recipe"
    text = " ".join(options)
    name = "".join(c if c.isalnum() else "-" for c in text).strip("-")[:40]
    return root / f"{name}-{hashlib.blake2b(text.encode(), digest_size=3).hexdigest()}"


def _folder_name(arm: str) -> str:
    """``teacher labels + LM + AAM`` -> ``teacher-labels-LM-AAM``."""
    return "-".join("".join(c if c.isalnum() else " " for c in arm).split())


def train(
    folder: Path,
    seeds: list[int],
    arms: list[str],
    options: list[str],
    cache: Path | None,
    phantom: Path | None = None,
) -> None:
    for seed in seeds:
        for arm in arms:
            out = folder / _folder_name(arm) / f"seed{seed}"
            if (out / "enet.keras").is_file():
                continue
            line = command(arm, seed, out, options, phantom)
            if cache is not None:
                line += ["--cache-dir", str(cache)]
            print("$ " + " ".join(line[1:]), flush=True)
            started = time.perf_counter()
            subprocess.run(line, check=True, stdout=subprocess.DEVNULL)
            print(f"  {arm}, seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)


def report(folder: Path, seeds: list[int], arms: list[str], threads: int) -> None:
    scan = read_volume(TEST_SCAN)
    truth = read_volume(TEST_TRUTH, labels=True).array > 0
    started = time.perf_counter()
    taps_mask = TapsTeacher(threads=threads)(scan).mask > 0
    taps_seconds = time.perf_counter() - started
    print(f"settings: {' '.join(RECIPE)} {folder.name}; test scan {TEST_SCAN.name}\n")
    print("| arm | seed | validation Dice | Dice on Case00 | student s |")
    print("|---|---|---|---|---|")
    scores: dict[str, list[float]] = {arm: [] for arm in arms}
    seconds = []
    for seed in seeds:
        for arm in arms:
            model_path = folder / _folder_name(arm) / f"seed{seed}" / "enet.keras"
            onnx_path = model_path.with_suffix(".onnx")
            if not onnx_path.is_file():
                subprocess.run(
                    [str(KDSEG), "export", str(model_path), "--out", str(onnx_path)],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            student = load_onnx(onnx_path, threads=threads, providers=["CPUExecutionProvider"])
            segment(scan, student, quality=False)  # warm-up: the session's first run
            started = time.perf_counter()
            labels = segment(scan, student, quality=False).labels > 0
            seconds.append(time.perf_counter() - started)
            score = dice(labels, truth)
            scores[arm].append(score)
            card = ModelCard.read_beside(model_path)
            validation = card.best_val_dice
            against = (card.teacher_model or {}).get("validation", "held-out masks")
            print(
                f"| {arm} | {seed} | {validation:.3f} | {score:.3f} | {seconds[-1]:.2f} |",
                flush=True,
            )
    print(f"\nvalidation Dice: {against}")
    for arm, values in scores.items():
        mean, std = mean_and_std(values)
        print(f"- {arm}: Dice on Case00 {mean:.3f} +- {std:.3f} over {len(values)} seeds")
    for arm in arms if BASELINE in arms else []:
        if arm == BASELINE:
            continue
        gain = paired_gain(np.array(scores[arm])[:, None], np.array(scores[BASELINE])[:, None])
        print(f"- {arm} - {BASELINE}: {gain.sentence()}")
    print(f"- TAPS: Dice {dice(taps_mask, truth):.3f} in {taps_seconds:.1f} s")
    print(
        f"- the student runs {taps_seconds / float(np.median(seconds)):.0f}x faster than TAPS "
        f"(median {np.median(seconds):.2f} s against {taps_seconds:.1f} s, {threads} threads)"
    )
    summary = {"scores": scores, "taps_seconds": taps_seconds, "student_seconds": seconds}
    (folder / "report.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads, both")
    parser.add_argument("--cache-dir", type=Path, help="preprocessing cache (default: kdseg's)")
    parser.add_argument("--report", action="store_true", help="measure only, train nothing")
    parser.add_argument(
        "--phantom",
        type=Path,
        help="a phantom dataset (kdseg phantom) whose labelled sites train beside the real scans",
    )
    parser.add_argument(
        "--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="default: all three"
    )
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.options = argv[split + 1 :]  # extra kdseg distill options
    if not TEST_SCAN.is_file():
        raise SystemExit(f"{TEST_SCAN}: the real scans are not here (../shared/data/real)")
    folder = settings_folder(args.out, args.options, args.phantom)
    if not args.report:
        train(folder, args.seeds, args.arms, args.options, args.cache_dir, args.phantom)
    report(folder, args.seeds, args.arms, args.threads)


if __name__ == "__main__":
    main()
