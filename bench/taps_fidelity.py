"""TAPS on ONNX Runtime against TAPS's own masks, on every reference scan in ../shared/data.

For each of the seven scans TAPS itself segmented (``reference/taps/``, written by
``taps segment --device cpu --exact``, lavlab-taps 1.1.2): our pipeline
(:class:`napari_kdseg.teachers.taps.TapsTeacher`) runs on the scan as the project reads it
(NIfTI file or DICOM series folder), and its mask is compared with TAPS's on the scan's grid.
TAPS's masks of DICOM series lie on the grid of SimpleITK's series reader; each is mapped onto
the project reader's grid voxel for voxel (the two differ at most by axis flips), and the
script refuses a pair of grids that does not map exactly.

Prints: scan, Dice against TAPS's mask, voxels where the masks differ (of TAPS's mask
voxels), our volume and TAPS's (cc), sliding windows run, and seconds for our pipeline.

    nice -n 19 .venv/bin/python bench/taps_fidelity.py --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

from napari_kdseg.data.io import read_volume
from napari_kdseg.data.volume import Volume
from napari_kdseg.teachers.taps import TapsTeacher

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def reference_scans(data: Path) -> list[tuple[str, Path, Path]]:
    """``(name, scan, TAPS mask)`` for every reference mask: ``promise12_Case00`` is the NIfTI
    file, ``Prostate3T-03-000N`` a series folder, ``ProstateX-NNNN_sS`` series number S."""
    real, reference = data / "real", data / "reference" / "taps"
    scans = []
    for mask in sorted(reference.glob("*_taps.nii.gz")):
        name = mask.name.removesuffix("_taps.nii.gz")
        if name == "promise12_Case00":
            scan = real / "promise12_case00" / "Case00.nii.gz"
        elif name.startswith("Prostate3T"):
            scan = real / "prostate3t_dicom" / name
        else:
            patient, _, series = name.rpartition("_s")
            folders = [
                f
                for f in (real / "prostatex_t2" / patient).iterdir()
                if f.name.split(".")[0] == series
            ]
            if len(folders) != 1:
                raise SystemExit(f"{name}: expected one series folder {series}.*, found {folders}")
            scan = folders[0]
        scans.append((name, scan, mask))
    return scans


def on_grid(mask_path: Path, volume: Volume) -> npt.NDArray[np.bool_]:
    """The mask at ``mask_path`` on ``volume``'s grid (array order), by exact voxel mapping."""
    image = nib.load(mask_path)
    data = np.asarray(image.dataobj) > 0
    xform = np.linalg.solve(image.affine, volume.affine)  # our voxel -> their voxel
    shape = volume.file_order_array.shape
    index = np.indices(shape).reshape(3, -1).astype(np.float64)
    theirs = xform[:3, :3] @ index + xform[:3, 3:]
    rounded = np.rint(theirs)
    error = float(np.abs(theirs - rounded).max())
    inside = np.all((rounded >= 0) & (rounded < np.asarray(data.shape)[:, None]), axis=0)
    if error > 0.05 or not inside.all():
        raise SystemExit(
            f"{mask_path.name}: grids do not map voxel for voxel (off by {error:.3f} voxel, "
            f"{int((~inside).sum())} voxels outside)"
        )
    picked = data[tuple(rounded.astype(np.intp))].reshape(shape)
    return np.ascontiguousarray(picked.transpose(2, 1, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()

    teacher = TapsTeacher(threads=args.threads)
    print("| scan | Dice vs TAPS | voxels differing | ours cc | TAPS cc | windows | seconds |")
    print("|---|---|---|---|---|---|---|")
    dices = []
    for name, scan, mask_path in reference_scans(args.data):
        volume = read_volume(scan)
        started = time.perf_counter()
        result = teacher(volume)
        seconds = time.perf_counter() - started
        ours, theirs = result.mask > 0, on_grid(mask_path, volume)
        voxel_cc = abs(float(np.linalg.det(volume.affine[:3, :3]))) / 1000
        total = int(ours.sum() + theirs.sum())
        dice = 2 * int((ours & theirs).sum()) / total if total else 1.0
        dices.append(dice)
        print(
            f"| {name} | {dice:.4f} | {int((ours ^ theirs).sum())} of {int(theirs.sum())}"
            f" | {ours.sum() * voxel_cc:.2f} | {theirs.sum() * voxel_cc:.2f}"
            f" | {result.windows} | {seconds:.1f} |",
            flush=True,
        )
    print(f"\nmin Dice {min(dices):.4f}, mean {np.mean(dices):.4f} over {len(dices)} scans")


if __name__ == "__main__":
    main()
