"""Dice, HD95 and ASD against cases whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_kdseg.evaluation.metrics import dice, score, summarise, surface, surface_distances


def _box(shape: tuple[int, int, int], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return mask


def test_dice_by_hand() -> None:
    a = _box((4, 10, 10), (0, 0, 0), (4, 5, 10))  # 200 voxels
    b = _box((4, 10, 10), (0, 0, 0), (4, 10, 5))  # 200 voxels, overlap 4*5*5 = 100
    assert dice(a, b) == pytest.approx(2 * 100 / 400)
    assert dice(a, a) == 1.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_identical_masks_have_zero_distances() -> None:
    a = _box((6, 12, 12), (1, 2, 2), (5, 9, 9))
    scores = score(a, a, (3.0, 0.5, 0.5))
    assert (scores.dice, scores.hd95, scores.asd) == (1.0, 0.0, 0.0)


def test_shift_along_an_anisotropic_axis_is_measured_in_mm() -> None:
    # Two 4-slice columns two pixels wide, one shifted by one slice of 3 mm.
    truth = _box((10, 2, 2), (2, 0, 0), (6, 2, 2))
    prediction = _box((10, 2, 2), (3, 0, 0), (7, 2, 2))
    forward, backward = surface_distances(prediction, truth, (3.0, 0.5, 0.5))
    # Every voxel of these columns touches the volume border, so all are surface voxels: the
    # overlapping slices are at distance 0 and the one-slice shift costs exactly 3 mm.
    assert set(np.round(forward, 6)) == {0.0, 3.0}
    assert forward.max() == pytest.approx(3.0)
    assert backward.max() == pytest.approx(3.0)
    scores = score(prediction, truth, (3.0, 0.5, 0.5))
    assert scores.hd95 == pytest.approx(3.0)
    # 1 of 4 slices of each column is not shared: a quarter of the pooled distances are 3 mm.
    assert scores.asd == pytest.approx(0.75)


def test_hd95_ignores_a_small_outlier_but_max_would_not() -> None:
    truth = _box((1, 40, 40), (0, 5, 5), (1, 35, 35))
    prediction = truth.copy()
    prediction[0, 0, 0] = 1  # a one-voxel island far from the gland
    scores = score(prediction, truth, (1.0, 1.0, 1.0))
    forward, _ = surface_distances(prediction, truth, (1.0, 1.0, 1.0))
    assert forward.max() == pytest.approx(math.hypot(5, 5))
    assert scores.hd95 == 0.0
    assert 0 < scores.asd < 0.1


def test_empty_prediction_is_undefined_not_zero() -> None:
    truth = _box((3, 8, 8), (1, 2, 2), (2, 6, 6))
    scores = score(np.zeros_like(truth), truth, (1.0, 1.0, 1.0))
    assert scores.dice == 0.0
    assert math.isnan(scores.hd95)
    assert math.isnan(scores.asd)
    assert scores.to_json()["hd95"] is None
    assert summarise([1.0, math.nan, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3, "undefined": 1}


def test_surface_of_a_solid_cube_is_its_shell() -> None:
    cube = _box((7, 7, 7), (1, 1, 1), (6, 6, 6)).astype(bool)
    shell = surface(cube)
    assert shell.sum() == 5**3 - 3**3


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        score(np.ones((2, 3, 3)), np.ones((2, 3, 4)), (1, 1, 1))


def test_distance_transform_matches_brute_force_on_random_blobs() -> None:
    from scipy import ndimage
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(3)
    spacing = (2.5, 0.7, 0.9)
    for _ in range(3):
        noise = ndimage.gaussian_filter(rng.normal(size=(2, 12, 16, 16)), (0, 1.5, 2, 2))
        prediction, truth = noise[0] > 0.05, noise[1] > 0.05
        forward, backward = surface_distances(prediction, truth, spacing)
        points_p = np.argwhere(surface(prediction)) * spacing
        points_t = np.argwhere(surface(truth)) * spacing
        pairwise = cdist(points_p, points_t)
        np.testing.assert_allclose(np.sort(forward), np.sort(pairwise.min(axis=1)), atol=1e-9)
        np.testing.assert_allclose(np.sort(backward), np.sort(pairwise.min(axis=0)), atol=1e-9)
