"""SAML preprocessing: reorientation, z-score, in-plane resampling and its exact inverse."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_kdseg.core.errors import VolumeError
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.preprocess import (
    Geometry,
    PreprocessConfig,
    binarize,
    gland_extent,
    prepare_labels,
    prepare_volume,
    reorient,
    resample_in_plane,
    stack_context,
    training_slices,
    zscore,
)
from napari_kdseg.data.volume import Volume


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def test_reorient_keeps_world_positions() -> None:
    """RAS-stored voxels reoriented to LPS land at the same world coordinates."""
    rng = np.random.default_rng(0)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    affine[:3, 3] = [-40, -30, 10]
    volume = Volume(rng.random((5, 6, 7)).astype(np.float32), affine)
    assert volume.orientation == "RAS"
    canonical = reorient(volume, "LPS")
    _, geometry = prepare_volume(volume, PreprocessConfig(size=8))
    assert geometry.canonical_shape == canonical.shape == (5, 6, 7)
    for k, j, i in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        world = geometry.canonical_affine @ np.array([i, j, k, 1.0])
        source_index = np.linalg.solve(affine, world)[:3].round().astype(int)
        assert canonical[k, j, i] == volume.array[source_index[2], source_index[1], source_index[0]]
    assert "".join(nib.aff2axcodes(geometry.canonical_affine)) == "LPS"


def test_reorient_swaps_axes_of_a_sagittal_stack() -> None:
    # A sagittal acquisition: file axis i runs anterior to posterior, j upwards, k left-right.
    affine = np.array([[0, 0, 2.0, 0], [-0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0, 1]])
    volume = Volume(np.zeros((3, 10, 12), np.float32), affine)  # array (k, j, i)
    assert reorient(volume, "LPS").shape == (10, 12, 3)


def test_zscore_and_its_refusals() -> None:
    data = np.random.default_rng(1).normal(100, 20, (4, 8, 8)).astype(np.float32)
    normalised = zscore(data)
    assert float(normalised.mean()) == pytest.approx(0, abs=1e-5)
    assert float(normalised.std()) == pytest.approx(1, abs=1e-4)
    data[0, 0, 0] = np.nan
    with pytest.raises(VolumeError, match="1 NaN/Inf"):
        zscore(data, "scan.nii.gz")
    with pytest.raises(VolumeError, match="constant"):
        zscore(np.ones((2, 2, 2)))


def test_binarize_merges_zones() -> None:
    assert binarize(np.array([0, 1, 2, 5])).tolist() == [0, 1, 1, 1]


def test_resampling_maps_are_exact_inverses() -> None:
    """Integer upsampling with nearest neighbours, then back, returns every pixel unchanged."""
    labels = np.random.default_rng(2).integers(0, 4, (3, 16, 20)).astype(np.float32)
    up = resample_in_plane(labels, (64, 80), order=0)
    np.testing.assert_array_equal(resample_in_plane(up, (16, 20), order=0), labels)
    # Each 4 x 4 block of the upsampled grid is one source pixel: centres align.
    np.testing.assert_array_equal(up[:, ::4, ::4], labels)
    np.testing.assert_array_equal(up[:, 3::4, 3::4], labels)


def test_smooth_image_round_trip() -> None:
    rows, cols = np.mgrid[0:48, 0:40]
    image = np.sin(rows / 7.0) + np.cos(cols / 5.0)
    stack = np.repeat(image[None].astype(np.float32), 2, axis=0)
    back = resample_in_plane(resample_in_plane(stack, (96, 96)), (48, 40))
    assert np.abs(back - stack)[:, 2:-2, 2:-2].max() < 0.02


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="odd"):
        PreprocessConfig(context=2)
    with pytest.raises(ValueError, match="axis once"):
        PreprocessConfig(orientation="LLS")
    with pytest.raises(ValueError, match="at least 8"):
        PreprocessConfig(size=4)


@pytest.mark.parametrize(("size", "min_dice"), [(256, 0.98), (64, 0.93)])
def test_real_mask_round_trip(
    promise12_case: tuple[Path, Path], size: int, min_dice: float
) -> None:
    image = read_volume(promise12_case[0])
    label = read_volume(promise12_case[1], labels=True)
    config = PreprocessConfig(size=size)
    prepared, geometry = prepare_volume(image, config)
    mask = prepare_labels(label, config)
    assert prepared.shape == mask.shape == (64, size, size)
    assert prepared.dtype == np.float32
    assert geometry.model_spacing == pytest.approx(
        (1.6156, 1.0937 * 128 / size, 1.0937 * 128 / size), rel=1e-3
    )
    back = geometry.labels_to_source(mask)
    assert back.shape == label.shape
    assert dice(back, label.array) > min_dice
    one_hot = np.stack([1.0 - mask, mask], axis=-1).astype(np.float32)
    from_probabilities = geometry.probabilities_to_source(one_hot)
    assert dice(from_probabilities, label.array) > min_dice
    assert Geometry.from_json(geometry.to_json()).to_json() == geometry.to_json()


def test_stack_context_repeats_edges() -> None:
    volume = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 2), np.float32)
    assert stack_context(volume, 0, 3)[0, 0].tolist() == [0, 0, 1]
    assert stack_context(volume, 2, 5)[0, 0].tolist() == [0, 1, 2, 3, 4]
    assert stack_context(volume, 4, 3)[0, 0].tolist() == [3, 4, 4]
    assert stack_context(volume, 3, 1).shape == (2, 2, 1)


def test_training_slices_inside_gland_plus_share() -> None:
    mask = np.zeros((20, 4, 4), np.uint8)
    mask[6:14, 1:3, 1:3] = 1
    assert gland_extent(mask) == (6, 13)
    rng = np.random.default_rng(0)
    assert training_slices(mask, 0.0, rng).tolist() == list(range(6, 14))
    chosen = training_slices(mask, 0.5, rng)
    inside = set(range(6, 14))
    assert inside <= set(chosen.tolist())
    assert len(chosen) == 12  # 8 inside + 4 outside
    assert len(training_slices(mask, 10.0, rng)) == 20  # capped at what exists
    assert training_slices(np.zeros((5, 2, 2), np.uint8), 0.0, rng).size == 0


def test_two_class_probabilities_map_back_like_the_general_arg_max() -> None:
    rng = np.random.default_rng(1)
    geometry = Geometry(
        source_shape=(3, 50, 70),
        source_affine=np.diag([0.7, -0.6, 3.0, 1.0]),
        orientation="LPS",
        size=32,
    )
    foreground = ndimage.gaussian_filter(rng.random((3, 32, 32)), (0, 2, 2))
    foreground = (foreground - foreground.min()) / np.ptp(foreground)
    probabilities = np.stack([1 - foreground, foreground], axis=-1).astype(np.float32)
    general = np.argmax(
        np.stack(
            [
                resample_in_plane(probabilities[..., c], geometry.canonical_shape[1:])
                for c in (0, 1)
            ],
            axis=-1,
        ),
        axis=-1,
    )
    expected = geometry._from_canonical(general.astype(np.uint8))
    labels = geometry.probabilities_to_source(probabilities)
    assert labels.shape == (3, 50, 70)
    assert np.mean(labels == expected) > 0.999  # only float ties at exactly 0.5 may differ


def test_resampling_to_the_same_grid_is_the_identity() -> None:
    array = np.random.default_rng(2).random((2, 9, 7)).astype(np.float32)
    assert np.array_equal(resample_in_plane(array, (9, 7)), array)
