"""Per-slice Dice, HD95 and ASD on shapes whose answers can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_kdseg.evaluation import metrics
from napari_kdseg.evaluation.slices import (
    compare_volumes,
    score_slice,
    slice_scores,
    sort_slices,
    worst_first,
)


def square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


def test_surface_of_a_2d_square_is_its_ring() -> None:
    ring = metrics.surface(square((8, 8), 2, 2, 4).astype(bool))
    assert ring.sum() == 12  # 16 pixels minus the 2 x 2 interior
    assert not ring[3:5, 3:5].any()


def test_square_shifted_by_one_column() -> None:
    """P and G are 4 x 4 squares, G one column to the right: they share 12 pixels.

    Of P's 12 ring pixels 6 lie on G's ring (distance 0) and 6 are one pixel away; the same
    holds from G to P. Pooled: 12 zeros and 12 ones, so ASD = 0.5 and HD95 = 1 (pixels of 1 mm).
    """
    scores = score_slice(square((10, 10), 2, 2, 4), square((10, 10), 2, 3, 4), (1.0, 1.0), 7)
    assert scores.index == 7
    assert scores.dice == pytest.approx(2 * 12 / 32)
    assert scores.asd == pytest.approx(0.5)
    assert scores.hd95 == pytest.approx(1.0)
    assert (scores.predicted_pixels, scores.truth_pixels) == (16, 16)


def test_distances_use_the_column_spacing() -> None:
    """Two vertical lines three columns apart: every pixel is 3 columns = 6 mm from the other
    line (rows are 0.5 mm, columns 2 mm), so HD95 = ASD = 6 mm and Dice = 0."""
    prediction = np.zeros((10, 10), dtype=np.uint8)
    truth = np.zeros((10, 10), dtype=np.uint8)
    prediction[2:7, 3] = 1
    truth[2:7, 6] = 1
    scores = score_slice(prediction, truth, (0.5, 2.0))
    assert scores.dice == 0.0
    assert scores.hd95 == pytest.approx(6.0)
    assert scores.asd == pytest.approx(6.0)


def test_empty_and_one_sided_slices() -> None:
    empty = np.zeros((6, 6), dtype=np.uint8)
    both_empty = score_slice(empty, empty, (1.0, 1.0))
    assert (both_empty.dice, both_empty.hd95, both_empty.asd) == (1.0, 0.0, 0.0)
    missed = score_slice(empty, square((6, 6), 1, 1, 2), (1.0, 1.0))
    assert missed.dice == 0.0
    assert math.isnan(missed.hd95)
    assert math.isnan(missed.asd)


def volume_with_three_kinds_of_slice() -> tuple[np.ndarray, np.ndarray]:
    """Slice 1 perfect, slice 2 shifted by one column, slice 3 missed, slices 0 and 4 empty."""
    prediction = np.zeros((5, 10, 10), dtype=np.uint8)
    truth = np.zeros_like(prediction)
    prediction[1] = truth[1] = square((10, 10), 2, 2, 4)
    prediction[2], truth[2] = square((10, 10), 2, 2, 4), square((10, 10), 2, 3, 4)
    truth[3] = square((10, 10), 4, 4, 3)
    return prediction, truth


def test_only_occupied_slices_are_scored_with_in_plane_spacing() -> None:
    prediction, truth = volume_with_three_kinds_of_slice()
    scores = slice_scores(prediction, truth, (5.0, 2.0, 2.0))
    assert [s.index for s in scores] == [1, 2, 3]
    assert scores[0].dice == 1.0
    assert scores[0].hd95 == 0.0
    assert scores[1].dice == pytest.approx(0.75)
    assert scores[1].asd == pytest.approx(1.0)  # 0.5 pixel at 2 mm per pixel
    assert scores[1].hd95 == pytest.approx(2.0)
    assert scores[2].dice == 0.0
    assert math.isnan(scores[2].hd95)


def test_compare_volumes_adds_the_3d_scores() -> None:
    prediction, truth = volume_with_three_kinds_of_slice()
    comparison = compare_volumes(prediction, truth, (5.0, 2.0, 2.0))
    assert comparison.volume == metrics.score(prediction, truth, (5.0, 2.0, 2.0))
    assert comparison.volume.dice == pytest.approx(2 * (16 + 12) / (16 + 16 + 16 + 16 + 9))
    assert len(comparison.slices) == 3
    assert comparison.spacing == (5.0, 2.0, 2.0)


def test_worst_first_puts_missed_slices_before_poor_ones() -> None:
    prediction, truth = volume_with_three_kinds_of_slice()
    # Slice 4: a 3 x 3 square predicted 2 columns off; Dice 2 * 3 / 18 = 1/3, larger distances.
    prediction[4], truth[4] = square((10, 10), 2, 2, 3), square((10, 10), 2, 4, 3)
    ordered = worst_first(slice_scores(prediction, truth, (1.0, 1.0, 1.0)))
    assert [s.index for s in ordered] == [3, 4, 2, 1]


def test_sort_by_column_keeps_undefined_values_last() -> None:
    prediction, truth = volume_with_three_kinds_of_slice()
    scores = slice_scores(prediction, truth, (1.0, 1.0, 1.0))
    assert [s.index for s in sort_slices(scores, "hd95", descending=True)] == [2, 1, 3]
    assert [s.index for s in sort_slices(scores, "hd95")] == [1, 2, 3]
    assert [s.index for s in sort_slices(scores, "index", descending=True)] == [3, 2, 1]
    with pytest.raises(ValueError, match="unknown column"):
        sort_slices(scores, "volume")


def test_mismatched_volumes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        compare_volumes(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="slice, row, column"):
        slice_scores(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), (1, 1))
