"""Overlap and surface-distance metrics of a 3D binary segmentation, in millimetres.

- Dice: ``2 |P ∩ G| / (|P| + |G|)``.
- HD95: the 95th percentile of the symmetric surface distances, i.e. of the distances from
  every surface voxel of P to the surface of G together with those from G to P (the
  convention of MedPy's ``hd95`` and of the Medical Segmentation Decathlon).
- ASD: the average symmetric surface distance over the same pooled distances (MedPy ``assd``).

Surfaces are the mask voxels with a background voxel among their 26 neighbours (voxels on the
volume's border count as surface); distances are Euclidean with the voxel spacing, computed by
a distance transform over the bounding box of both masks only, which is exact (every surface
voxel lies inside that box) and keeps large volumes cheap.

When exactly one of P and G is empty the distances are undefined: HD95 and ASD are NaN, Dice
is 0, and summaries count such cases instead of hiding them. Two empty masks agree perfectly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage


@dataclass(frozen=True)
class SegmentationScores:
    """Metrics of one prediction against its ground truth (distances in mm)."""

    dice: float
    hd95: float
    asd: float
    predicted_voxels: int
    truth_voxels: int

    def to_json(self) -> dict[str, float | int | None]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def dice(prediction: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.sum(prediction & truth)) / total


def surface(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Voxels of ``mask`` touching the background: full connectivity (26 neighbours in 3D, 8
    in 2D); the border is background."""
    neighbours = np.ones((3,) * mask.ndim, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, neighbours, border_value=0)


def surface_distances(
    prediction: npt.ArrayLike, truth: npt.ArrayLike, spacing: Sequence[float]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distances (mm) from P's surface voxels to G's surface, and from G's to P's (3D, or 2D
    contours).

    Both masks must be non-empty and share a grid; ``spacing`` is per array axis. The
    distance transform runs over their joint bounding box.
    """
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    if prediction.shape != truth.shape:
        raise ValueError(f"masks differ in shape: {prediction.shape} vs {truth.shape}")
    if len(spacing) != prediction.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {prediction.ndim} axes")
    if not prediction.any() or not truth.any():
        raise ValueError("surface distances need two non-empty masks")
    box = ndimage.find_objects((prediction | truth).astype(np.uint8))[0]
    border_p, border_t = surface(prediction[box]), surface(truth[box])
    to_truth = ndimage.distance_transform_edt(~border_t, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~border_p, sampling=spacing)
    return to_truth[border_p], to_prediction[border_t]


def score(
    prediction: npt.ArrayLike, truth: npt.ArrayLike, spacing: Sequence[float]
) -> SegmentationScores:
    """Dice, HD95 and ASD of ``prediction`` against ``truth`` (see the module docstring)."""
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    if prediction.shape != truth.shape:
        raise ValueError(
            f"prediction {prediction.shape} and ground truth {truth.shape} differ in shape"
        )
    counts = int(prediction.sum()), int(truth.sum())
    if counts[0] == 0 and counts[1] == 0:
        return SegmentationScores(1.0, 0.0, 0.0, *counts)
    if counts[0] == 0 or counts[1] == 0:
        return SegmentationScores(0.0, math.nan, math.nan, *counts)
    forward, backward = surface_distances(prediction, truth, spacing)
    pooled = np.concatenate([forward, backward])
    return SegmentationScores(
        dice=dice(prediction, truth),
        hd95=float(np.percentile(pooled, 95)),
        asd=float(pooled.mean()),
        predicted_voxels=counts[0],
        truth_voxels=counts[1],
    )


def summarise(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and standard deviation over the defined values, and how many were undefined."""
    array = np.asarray(values, dtype=np.float64)
    defined = array[~np.isnan(array)]
    return {
        "mean": float(defined.mean()) if defined.size else None,
        "std": float(defined.std()) if defined.size else None,
        "n": int(array.size),
        "undefined": int(array.size - defined.size),
    }
