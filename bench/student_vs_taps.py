"""A light student against TAPS on the same CPU, end to end per real scan, in one run
(issue 16, part 6).

Both run on ONNX Runtime with the same number of threads: the student (an exported ``.onnx``,
the 2D network applied slice by slice with the project's preprocessing and its largest
component) and TAPS (its 3D sliding-window pipeline, :mod:`napari_kdseg.teachers.taps`).
Each scan is read once; the time per model runs from the scan in memory to the mask on the
scan's grid. Dice against the ground truth where a scan has one (``promise12_case00``), else
the student's agreement with TAPS.

    .venv/bin/kdseg export STUDENT.keras --out /tmp/student.onnx
    .venv/bin/python bench/student_vs_taps.py /tmp/student.onnx --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_kdseg.data.io import read_volume
from napari_kdseg.evaluation.metrics import dice
from napari_kdseg.inference.onnx_runtime import load_onnx
from napari_kdseg.inference.segment import segment
from napari_kdseg.teachers.taps import VERSION, TapsTeacher

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def scans() -> list[tuple[str, Path, Path | None]]:
    """``(name, scan, ground truth or None)`` for the real scans in ``../shared``."""
    found: list[tuple[str, Path, Path | None]] = [
        (
            "promise12_case00",
            REAL / "promise12_case00" / "Case00.nii.gz",
            REAL / "promise12_case00" / "Case00_segmentation.nii.gz",
        )
    ]
    found += [(p.name, p, None) for p in sorted((REAL / "prostate3t_dicom").iterdir())]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student", type=Path, help="an exported student (.onnx)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads, both")
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"{REAL}: the real scans are not here (../shared/data/real)")
    student = load_onnx(args.student, threads=args.threads, providers=["CPUExecutionProvider"])
    taps = TapsTeacher(threads=args.threads)
    print(
        f"student {args.student.name} against TAPS (lavlab-taps {VERSION}), "
        f"{args.threads} ONNX Runtime thread(s)\n"
    )
    print("| scan | student s | TAPS s | TAPS / student | student Dice | TAPS Dice |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for name, path, truth_path in scans():
        scan = read_volume(path)
        started = time.perf_counter()
        labels = segment(scan, student).labels > 0
        student_seconds = time.perf_counter() - started
        started = time.perf_counter()
        reference = taps(scan).mask > 0
        taps_seconds = time.perf_counter() - started
        ratios.append(taps_seconds / student_seconds)
        if truth_path is not None:
            truth = read_volume(truth_path, labels=True).array > 0
            scores = f"{dice(labels, truth):.3f} | {dice(reference, truth):.3f}"
        else:
            scores = f"{dice(labels, reference):.3f} (vs TAPS) | n/a"
        print(
            f"| {name} | {student_seconds:.2f} | {taps_seconds:.1f} | "
            f"{taps_seconds / student_seconds:.0f}x | {scores} |",
            flush=True,
        )
    print(f"\nTAPS takes {np.median(ratios):.0f}x the student's time per scan (median).")


if __name__ == "__main__":
    main()
