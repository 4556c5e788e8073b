"""Property-based tests of the readers and of the preprocessing round trip.

Random small shapes, voxel sizes, origins and orientations (any of the 48 axis permutations
and flips). The properties:

- a volume written as NIfTI reads back with the same voxels and affine, as a scan or as a
  label map, and its header agrees with the full read; the MetaImage reader agrees too;
- label maps of a few non-negative integers read back unchanged, whatever their dtype;
- ``prepare_volume`` puts every volume on ``(slices, size, size)`` with zero mean and unit
  variance where the in-plane resampling is the identity;
- ``Geometry.probabilities_to_source`` of a one-hot of a prepared mask gives back a label map
  on the source grid (shape, uint8, values 0/1) and, where the in-plane grid is unchanged
  (size equal to the canonical rows and columns), exactly the source mask, for any
  orientation; on a finer model grid (an integer upsampling) a box mask comes back within one
  voxel of its border;
- geometry survives its JSON round trip, and the model grid covers the source field of view.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_kdseg.data.io import read_header, read_volume, write_labels
from napari_kdseg.data.nifti import write_nifti
from napari_kdseg.data.preprocess import (
    Geometry,
    PreprocessConfig,
    prepare_labels,
    prepare_volume,
)
from napari_kdseg.data.volume import Volume, grid_difference, integer_labels, lps_geometry

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
PERMUTATIONS = list(itertools.permutations(range(3)))


@st.composite
def affines(draw: st.DrawFn) -> np.ndarray:
    """Axis-aligned affines in any orientation: a permutation, flips, voxel sizes, an origin."""
    permutation = draw(st.sampled_from(PERMUTATIONS))
    flips = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3))
    sizes = draw(
        st.lists(
            st.floats(0.2, 6.0, allow_nan=False).map(lambda v: round(v, 3)),
            min_size=3,
            max_size=3,
        )
    )
    origin = draw(st.lists(st.floats(-200, 200).map(lambda v: round(v, 2)), min_size=3, max_size=3))
    affine = np.eye(4)
    affine[:3, :3] = 0
    for file_axis, world_axis in enumerate(permutation):
        affine[world_axis, file_axis] = flips[file_axis] * sizes[file_axis]
    affine[:3, 3] = origin
    return affine


@st.composite
def scans(draw: st.DrawFn, max_side: int = 9) -> Volume:
    side = st.integers(1, max_side)
    # one voxel is a constant scan, which preprocessing refuses (nothing to normalise)
    shape = draw(st.tuples(side, side, side).filter(lambda s: s[0] * s[1] * s[2] > 1))
    seed = draw(st.integers(0, 2**32 - 1))
    array = np.random.default_rng(seed).normal(100, 30, size=shape).astype(np.float32)
    return Volume(array, draw(affines()))


# --- readers --------------------------------------------------------------------------------


@PROPERTY
@given(volume=scans(), compressed=st.booleans())
def test_nifti_round_trip_keeps_voxels_and_affine(
    tmp_path_factory: pytest.TempPathFactory, volume: Volume, compressed: bool
) -> None:
    path = tmp_path_factory.mktemp("nifti") / ("scan.nii.gz" if compressed else "scan.nii")
    write_nifti(volume, path)
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, rtol=1e-6, atol=1e-4)
    assert back.spacing == pytest.approx(volume.spacing, rel=1e-6)
    assert back.orientation == volume.orientation
    header = read_header(path)
    assert header.shape == volume.shape
    assert header.spacing == pytest.approx(volume.spacing, rel=1e-6)
    np.testing.assert_allclose(header.affine, back.affine)


@PROPERTY
@given(volume=scans(), seed=st.integers(0, 2**32 - 1), top=st.integers(1, 15))
def test_label_round_trip_keeps_labels_and_geometry(
    tmp_path_factory: pytest.TempPathFactory, volume: Volume, seed: int, top: int
) -> None:
    labels = np.random.default_rng(seed).integers(0, top + 1, size=volume.shape).astype(np.uint8)
    path = write_labels(labels, volume, tmp_path_factory.mktemp("labels") / "mask.nii.gz")
    back = read_volume(path, labels=True)
    np.testing.assert_array_equal(back.array, labels)
    assert back.same_grid(volume)
    assert grid_difference(back.shape, back.affine, volume.shape, volume.affine) is None


@PROPERTY
@given(volume=scans())
def test_metaimage_reader_agrees_with_nifti(
    tmp_path_factory: pytest.TempPathFactory, volume: Volume
) -> None:
    folder = tmp_path_factory.mktemp("mha")
    image = sitk.GetImageFromArray(volume.array)
    direction, spacing, origin = lps_geometry(volume.affine)
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(origin.tolist())
    sitk.WriteImage(image, str(folder / "scan.mha"))
    back = read_volume(folder / "scan.mha")
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-6)
    assert read_header(folder / "scan.mha").shape == volume.shape


@PROPERTY
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    dtype=st.sampled_from(["uint8", "int16", "uint16", "int32", "float32", "float64"]),
    values=st.lists(st.integers(0, 255), min_size=1, max_size=16, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_integer_labels_keep_a_few_non_negative_values(
    shape: tuple[int, int, int], dtype: str, values: list[int], seed: int
) -> None:
    data = np.random.default_rng(seed).choice(values, size=shape).astype(dtype)
    result = integer_labels("mask.nii.gz", data)
    assert np.issubdtype(result.dtype, np.integer)
    np.testing.assert_array_equal(result, data.astype(np.int64))


# --- preprocessing --------------------------------------------------------------------------


def _canonical_square_volume(
    slices: int, side: int, affine: np.ndarray, orientation: str, seed: int
) -> Volume:
    """A volume whose two in-plane axes (after reorientation) both have ``side`` voxels."""
    probe = Geometry((1, 1, 1), affine, orientation, 8).to_canonical
    file_shape = [0, 0, 0]
    for file_axis, (target_axis, _) in enumerate(probe):
        # target axes 0, 1 are columns and rows of the canonical grid, 2 its slices
        file_shape[file_axis] = slices if int(target_axis) == 2 else side
    array = np.random.default_rng(seed).normal(size=tuple(reversed(file_shape)))
    return Volume(array.astype(np.float32), affine)


def _box_mask(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    corner = [int(rng.integers(0, n)) for n in shape]
    far = [int(rng.integers(c + 1, n + 1)) for c, n in zip(corner, shape, strict=True)]
    mask[tuple(slice(c, f) for c, f in zip(corner, far, strict=True))] = 1
    return mask


def _one_hot(mask: np.ndarray) -> np.ndarray:
    return np.eye(2, dtype=np.float32)[mask]


orientations = st.sampled_from(["LPS", "RAS", "LAI", "PSL", "SRA"])


@PROPERTY
@given(
    slices=st.integers(1, 5),
    side=st.integers(8, 14),
    affine=affines(),
    orientation=orientations,
    seed=st.integers(0, 2**32 - 1),
)
def test_identity_resampling_round_trip_is_exact(
    slices: int, side: int, affine: np.ndarray, orientation: str, seed: int
) -> None:
    scan = _canonical_square_volume(slices, side, affine, orientation, seed)
    config = PreprocessConfig(size=side, context=1, orientation=orientation)
    prepared, geometry = prepare_volume(scan, config)
    assert prepared.shape == (slices, side, side)
    assert geometry.canonical_shape == (slices, side, side)
    assert float(prepared.mean(dtype=np.float64)) == pytest.approx(0.0, abs=1e-5)
    assert float(prepared.std(dtype=np.float64)) == pytest.approx(1.0, rel=1e-4)

    mask = scan.with_array(_box_mask(scan.shape, seed))
    on_model_grid = prepare_labels(mask, config)
    back = geometry.probabilities_to_source(_one_hot(on_model_grid))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask.array)
    np.testing.assert_array_equal(geometry.labels_to_source(on_model_grid), mask.array)


@PROPERTY
@given(
    scan=scans(max_side=10),
    orientation=orientations,
    size=st.integers(8, 24),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_model_grid_maps_back_to_the_source_grid(
    scan: Volume, orientation: str, size: int, seed: int
) -> None:
    config = PreprocessConfig(size=size, context=1, orientation=orientation)
    prepared, geometry = prepare_volume(scan, config)
    assert prepared.dtype == np.float32
    assert prepared.shape == (geometry.canonical_shape[0], size, size)
    assert sorted(geometry.canonical_shape) == sorted(scan.shape)
    assert np.all(np.isfinite(prepared))

    mask = scan.with_array(_box_mask(scan.shape, seed))
    back = geometry.probabilities_to_source(_one_hot(prepare_labels(mask, config)))
    assert back.shape == scan.shape
    assert back.dtype == np.uint8
    assert set(np.unique(back)) <= {0, 1}

    # the model grid spans the same field of view as the canonical source grid
    canonical_sizes = np.sqrt((geometry.canonical_affine[:3, :3] ** 2).sum(axis=0))[::-1]
    rows, cols = geometry.canonical_shape[1:]
    assert geometry.model_spacing[1] * size == pytest.approx(canonical_sizes[1] * rows)
    assert geometry.model_spacing[2] * size == pytest.approx(canonical_sizes[2] * cols)

    again = Geometry.from_json(geometry.to_json())
    assert again.source_shape == geometry.source_shape
    np.testing.assert_array_equal(again.source_affine, geometry.source_affine)
    assert (again.orientation, again.size) == (geometry.orientation, geometry.size)


@PROPERTY
@given(
    slices=st.integers(1, 4),
    side=st.integers(4, 8),
    factor=st.integers(2, 3),
    affine=affines(),
    orientation=orientations,
    seed=st.integers(0, 2**32 - 1),
)
def test_upsampled_box_mask_comes_back_within_a_voxel(
    slices: int, side: int, factor: int, affine: np.ndarray, orientation: str, seed: int
) -> None:
    scan = _canonical_square_volume(slices, side, affine, orientation, seed)
    config = PreprocessConfig(size=side * factor, context=1, orientation=orientation)
    _, geometry = prepare_volume(scan, config)
    mask = _box_mask(scan.shape, seed)
    back = geometry.probabilities_to_source(_one_hot(prepare_labels(scan.with_array(mask), config)))
    assert back.shape == mask.shape
    # anything that changed lies on the box's border: within one voxel of both masks
    changed = back != mask
    if changed.any():
        from scipy import ndimage

        near_border = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        assert np.all(near_border[changed])


def test_nifti_round_trip_example(tmp_path: Path) -> None:
    """One fixed example of the round trip above, to read without hypothesis."""
    affine = np.array([[0, 0, -3.0, 10], [-0.5, 0, 0, 20], [0, 0.5, 0, -5], [0, 0, 0, 1]])
    volume = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), affine)
    back = read_volume(write_nifti(volume, tmp_path / "scan.nii.gz"))
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert nib.aff2axcodes(back.affine) == tuple(back.orientation)
