"""Per-slice scores of a prediction against its ground truth, for a table beside the viewer.

Each axial slice (axis 0 of a ``(z, y, x)`` volume) is scored in 2D with the in-plane voxel
spacing: Dice, HD95 and ASD as in :mod:`napari_kdseg.evaluation.metrics`, with the 2D surface
being the mask pixels that touch the background among their 8 neighbours (pixels on the image
border count as surface). Only slices where either mask is non-empty are listed; the
whole-volume scores come from :func:`napari_kdseg.evaluation.metrics.score`.

When exactly one mask of a slice is empty, Dice is 0 and the distances are NaN (undefined),
as for volumes; :func:`worst_first` puts those slices first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from napari_kdseg.evaluation.metrics import SegmentationScores, dice, score, surface_distances

#: Columns a table shows, in order: attribute name and header.
SLICE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("index", "slice"),
    ("dice", "Dice"),
    ("hd95", "HD95 (mm)"),
    ("asd", "ASD (mm)"),
)


@dataclass(frozen=True)
class SliceScores:
    """Scores of one slice (distances in mm; NaN when exactly one mask is empty)."""

    index: int
    dice: float
    hd95: float
    asd: float
    predicted_pixels: int
    truth_pixels: int


@dataclass(frozen=True)
class VolumeComparison:
    """Whole-volume scores and the scores of every slice where either mask has voxels."""

    volume: SegmentationScores
    slices: tuple[SliceScores, ...]
    spacing: tuple[float, float, float]


def score_slice(
    prediction: npt.ArrayLike, truth: npt.ArrayLike, spacing: Sequence[float], index: int = 0
) -> SliceScores:
    """Dice, HD95 and ASD of one 2D slice; ``spacing`` is ``(row, column)`` in mm."""
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    if prediction.ndim != 2 or prediction.shape != truth.shape:
        raise ValueError(
            f"expected two 2D slices of one shape, got {prediction.shape} and {truth.shape}"
        )
    counts = int(prediction.sum()), int(truth.sum())
    if counts[0] == 0 and counts[1] == 0:
        return SliceScores(index, 1.0, 0.0, 0.0, *counts)
    if counts[0] == 0 or counts[1] == 0:
        return SliceScores(index, 0.0, math.nan, math.nan, *counts)
    forward, backward = surface_distances(prediction, truth, spacing)
    pooled = np.concatenate([forward, backward])
    return SliceScores(
        index=index,
        dice=dice(prediction, truth),
        hd95=float(np.percentile(pooled, 95)),
        asd=float(pooled.mean()),
        predicted_pixels=counts[0],
        truth_pixels=counts[1],
    )


def slice_scores(
    prediction: npt.ArrayLike, truth: npt.ArrayLike, spacing: Sequence[float]
) -> list[SliceScores]:
    """Scores of every slice (axis 0) where either mask is non-empty, in slice order.

    ``spacing`` is the volume's ``(slice, row, column)`` spacing; the in-plane part is used.
    """
    prediction, truth = _check_pair(prediction, truth, spacing)
    in_plane = (float(spacing[1]), float(spacing[2]))
    occupied = np.flatnonzero(prediction.any(axis=(1, 2)) | truth.any(axis=(1, 2)))
    return [score_slice(prediction[z], truth[z], in_plane, int(z)) for z in occupied]


def compare_volumes(
    prediction: npt.ArrayLike, truth: npt.ArrayLike, spacing: Sequence[float]
) -> VolumeComparison:
    """Whole-volume scores (3D, :func:`metrics.score`) and per-slice scores (2D)."""
    prediction, truth = _check_pair(prediction, truth, spacing)
    spacing3 = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return VolumeComparison(
        volume=score(prediction, truth, spacing3),
        slices=tuple(slice_scores(prediction, truth, spacing3)),
        spacing=spacing3,
    )


def badness(scores: SliceScores) -> tuple[float, float, float]:
    """Sort key, smallest = worst: low Dice, then large (or undefined) HD95 and ASD."""
    return (scores.dice, -_undefined_is_worst(scores.hd95), -_undefined_is_worst(scores.asd))


def worst_first(slices: Sequence[SliceScores]) -> list[SliceScores]:
    """Slices ordered from the worst (lowest Dice; ties: largest HD95, NaN worst) to the best."""
    return sorted(slices, key=lambda s: (*badness(s), s.index))


def sort_slices(
    slices: Sequence[SliceScores], column: str, descending: bool = False
) -> list[SliceScores]:
    """Slices sorted by one attribute (``index``, ``dice``, ``hd95``, ``asd``); NaN sorts last."""
    if column not in {name for name, _ in SLICE_COLUMNS}:
        raise ValueError(f"unknown column {column!r}; expected one of {_column_names()}")
    defined = [s for s in slices if not math.isnan(float(getattr(s, column)))]
    undefined = [s for s in slices if math.isnan(float(getattr(s, column)))]
    ordered = sorted(defined, key=lambda s: (getattr(s, column), s.index), reverse=descending)
    return ordered + undefined


def _undefined_is_worst(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _column_names() -> list[str]:
    return [name for name, _ in SLICE_COLUMNS]


def _check_pair(
    prediction: npt.ArrayLike, truth: npt.ArrayLike, spacing: Sequence[float]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    prediction, truth = np.asarray(prediction) > 0, np.asarray(truth) > 0
    if prediction.shape != truth.shape:
        raise ValueError(
            f"prediction {prediction.shape} and ground truth {truth.shape} differ in shape"
        )
    if prediction.ndim != 3:
        raise ValueError(f"expected (slices, rows, columns) volumes, got {prediction.shape}")
    if len(spacing) != 3:
        raise ValueError(f"spacing must give 3 values (slice, row, column), got {spacing}")
    return prediction, truth
