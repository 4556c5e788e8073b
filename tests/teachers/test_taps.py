"""TAPS on ONNX Runtime: each step of its pipeline on small arrays, and the whole of it
against the mask TAPS itself wrote for PROMISE12 Case00."""

from __future__ import annotations

import importlib.metadata
import itertools
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_kdseg.data.io import read_volume
from napari_kdseg.data.volume import Volume
from napari_kdseg.teachers import _taps_pipeline as steps
from napari_kdseg.teachers import taps
from napari_kdseg.teachers.taps import (
    TapsChecks,
    TapsNotInstalledError,
    TapsTeacher,
    run_taps,
    taps_model_path,
)

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ index + affine[:3, 3]


# --- reorientation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns",
    [
        np.diag([-1.2, -0.9, 3.0]),  # LPS, as DICOM-derived files often are
        np.array([[0.0, 0.0, -2.0], [1.1, 0.0, 0.0], [0.0, -0.7, 0.0]]),  # axes swapped too
    ],
)
def test_to_ras_keeps_every_voxel_at_its_world_position(columns: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = (10.0, -20.0, 30.0)
    ras, ras_affine, ornt = steps.to_ras(data, affine)
    assert "".join(nib.aff2axcodes(ras_affine)) == "RAS"
    for index in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        position = world(affine, np.asarray(index, float))
        ras_index = np.linalg.solve(ras_affine[:3, :3], position - ras_affine[:3, 3])
        assert np.allclose(ras_index, np.rint(ras_index))
        assert ras[tuple(np.rint(ras_index).astype(int))] == data[index]
    assert np.array_equal(steps.from_ras(ras, ornt), data)


# --- resampling to 0.8 x 0.8 x 3.0 mm and back ----------------------------------------------------


def test_target_grid_spans_the_voxel_centres_at_the_new_spacing() -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = (5.0, 6.0, 7.0)
    shape, grid = steps.target_grid((20, 21, 10), affine, (0.8, 0.8, 3.0))
    # (n - 1) * old / new + 1, rounded: 24.75 -> 25, 26 -> 26, 7 -> 7
    assert shape == (25, 26, 7)
    assert np.allclose(np.diag(grid)[:3], (0.8, 0.8, 3.0))
    assert np.allclose(grid[:3, 3], (5.0, 6.0, 7.0))  # same first voxel centre
    # an axis within 1e-3 mm of its target keeps its own spacing, as in MONAI
    _, kept = steps.target_grid((4, 4, 4), np.diag([0.8005, 1.0, 1.0, 1.0]), (0.8, 0.8, 3.0))
    assert kept[0, 0] == pytest.approx(0.8005)


def test_target_grid_keeps_the_direction_of_an_oblique_scan() -> None:
    angle = np.deg2rad(20)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.5, 0.5, 3.3])
    _, grid = steps.target_grid((40, 40, 10), affine, (0.8, 0.8, 3.0))
    assert np.allclose(grid[:3, :3], rotation @ np.diag([0.8, 0.8, 3.0]))


def test_resample_linear_reproduces_a_linear_ramp_and_clamps_at_the_border() -> None:
    affine = np.diag([1.1, 0.9, 2.5, 1.0])
    index = np.indices((12, 14, 9)).astype(float)
    positions = np.einsum("ij,jxyz->ixyz", affine[:3, :3], index)
    ramp = (0.3 * positions[0] - 0.2 * positions[1] + 0.1 * positions[2]).astype(np.float32)
    shape, grid = steps.target_grid(ramp.shape, affine, (0.8, 0.8, 3.0))
    out = steps.resample_linear(ramp, affine, grid, shape)
    assert out.dtype == np.float32
    assert out.shape == shape
    new_index = np.indices(shape).astype(float)
    new_positions = np.einsum("ij,jxyz->ixyz", grid[:3, :3], new_index)
    new_positions += grid[:3, 3][:, None, None, None]
    extent = (np.asarray(ramp.shape) - 1) * np.diag(affine)[:3]
    inside = np.all(new_positions <= extent[:, None, None, None] + 1e-9, axis=0)
    expected = 0.3 * new_positions[0] - 0.2 * new_positions[1] + 0.1 * new_positions[2]
    assert np.allclose(out[inside], expected[inside], atol=1e-4)
    # past the last source voxel, the edge value repeats (padding_mode="border")
    outside = ~inside
    assert outside.any()
    clamped = np.minimum(new_positions, extent[:, None, None, None])
    edge = 0.3 * clamped[0] - 0.2 * clamped[1] + 0.1 * clamped[2]
    assert np.allclose(out[outside], edge[outside], atol=1e-4)


def test_resampling_there_and_back_returns_a_smooth_volume() -> None:
    affine = np.diag([0.5, 0.5, 1.5, 1.0])
    x, y, z = np.meshgrid(np.arange(60), np.arange(60), np.arange(20), indexing="ij")
    smooth = np.sin(x / 9.0) * np.cos(y / 11.0) + z / 20.0
    shape, grid = steps.target_grid(smooth.shape, affine, (0.8, 0.8, 3.0))
    there = steps.resample_linear(smooth, affine, grid, shape)
    back = steps.resample_linear(there, grid, affine, smooth.shape)
    assert np.abs(back - smooth)[:-4, :-4, :-2].max() < 0.02


def test_resample_linear_skips_an_identity_transform() -> None:
    data = np.random.default_rng(1).normal(size=(4, 5, 6))
    out = steps.resample_linear(data, np.eye(4), np.eye(4), data.shape)
    assert np.array_equal(out, data.astype(np.float32))


# --- z-score over non-zero voxels -----------------------------------------------------------------


def test_nonzero_zscore_leaves_zeros_and_standardises_the_rest() -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(50.0, 7.0, size=(10, 10, 10)).astype(np.float32)
    data[:3] = 0.0
    out = steps.nonzero_zscore(data)
    assert np.all(out[:3] == 0.0)
    assert out[3:].mean() == pytest.approx(0.0, abs=1e-5)
    assert out[3:].std() == pytest.approx(1.0, abs=1e-5)  # population std, as in MONAI
    constant = np.full((3, 3, 3), 4.0, np.float32)
    assert np.all(steps.nonzero_zscore(constant) == 0.0)  # std 0 reads as 1


# --- crop to the foreground with a margin ---------------------------------------------------------


def test_foreground_box_widens_by_the_margin_and_may_leave_the_volume() -> None:
    data = np.full((30, 30, 12), -1.0, np.float32)
    data[10:14, 12:20, 0:3] = 2.0  # touches the first slice
    start, stop = steps.foreground_box(data, margin=5)
    assert start == (5, 7, -5)
    assert stop == (19, 25, 8)
    cropped = steps.crop_box(data, (start, stop))
    assert cropped.shape == (14, 18, 13)
    assert np.all(cropped[:, :, :5] == 0.0)  # the part past the volume is zero-padded
    assert np.array_equal(cropped[:, :, 5:], data[5:19, 7:25, 0:8])
    pasted = steps.paste_box(cropped, (start, stop), data.shape)
    assert np.array_equal(pasted[5:19, 7:25, 0:8], data[5:19, 7:25, 0:8])
    assert np.all(pasted[:5] == 0.0)
    assert np.all(pasted[:, :, 8:] == 0.0)


# --- sliding windows and their blending -----------------------------------------------------------


def test_window_starts_cover_the_axis_with_half_overlap() -> None:
    assert steps.window_starts(128, 128, 0.5) == [0]
    assert steps.window_starts(200, 128, 0.5) == [0, 64, 72]  # the last one ends at 200
    assert steps.window_starts(300, 128, 0.5) == [0, 64, 128, 172]
    assert steps.window_starts(40, 32, 0.5) == [0, 8]
    for size in range(128, 400, 7):
        starts = steps.window_starts(size, 128, 0.5)
        covered = np.zeros(size, bool)
        for start in starts:
            covered[start : start + 128] = True
        assert covered.all()
        assert starts[-1] + 128 == size
        assert all(b - a <= 64 for a, b in itertools.pairwise(starts))


def test_gaussian_importance_is_centred_and_clamped() -> None:
    weights = steps.gaussian_importance((128, 128, 32))
    assert weights.shape == (128, 128, 32)
    assert weights.dtype == np.float32
    centre = np.exp(-(0.5**2) / (2 * 16.0**2)) ** 2 * np.exp(-(0.5**2) / (2 * 4.0**2))
    assert weights.max() == pytest.approx(centre, rel=1e-5)
    assert weights[0, 0, 0] == pytest.approx(1e-3)  # the raw corner is ~1e-10
    assert np.array_equal(weights, weights[::-1, ::-1, ::-1])


def test_sliding_window_blends_overlapping_windows_by_their_weights() -> None:
    roi = (8, 4, 4)
    data = np.zeros((12, 4, 4), np.float32)  # windows start at 0 and 4 along the first axis
    calls: list[int] = []

    def predict(window: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.full(window.shape, float(len(calls) - 1), np.float32)  # 0, then 1

    out = steps.sliding_window(data, roi, predict, overlap=0.5, sigma_scale=0.125)
    assert len(calls) == 2
    weights = steps.gaussian_importance(roi, 0.125)
    assert np.allclose(out[:4], 0.0)
    assert np.allclose(out[8:], 1.0)
    for x in range(4, 8):  # both windows: the second's weighted share
        second = weights[x - 4, 1, 1]
        first = weights[x, 1, 1]
        assert out[x, 1, 1] == pytest.approx(second / (first + second), rel=1e-5)
    assert out[5, 1, 1] < 0.5 < out[6, 1, 1]


def test_sliding_window_pads_a_small_volume_and_returns_its_own_shape() -> None:
    data = np.arange(6 * 4 * 3, dtype=np.float32).reshape(6, 4, 3) + 1.0
    seen: list[np.ndarray] = []

    def predict(window: np.ndarray) -> np.ndarray:
        seen.append(window.copy())
        return window * 2.0

    out = steps.sliding_window(data, (8, 4, 4), predict)
    assert out.shape == data.shape
    assert np.allclose(out, data * 2.0)
    (window,) = seen
    assert np.array_equal(window[1:7, :, 0:3], data)  # 2 and 1 padded: half before
    assert np.all(window[0] == 0)
    assert np.all(window[7] == 0)
    assert np.all(window[:, :, 3] == 0)
    assert steps.window_count((200, 100, 20), (128, 128, 32)) == 3


# --- largest component and TAPS's checks ----------------------------------------------------------


def test_largest_component_uses_26_connectivity() -> None:
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:4, 1:4, 1:4] = 1  # 27 voxels
    mask[4, 4, 4] = 1  # touches only a corner: the same component with 26-connectivity
    mask[7:9, 7:9, 7:9] = 1  # 8 voxels, separate
    kept, count = steps.largest_component(mask)
    assert count == 2
    assert kept.sum() == 28
    assert kept[4, 4, 4] == 1
    assert kept[8, 8, 8] == 0


def test_checks_measure_volume_extent_and_flags() -> None:
    affine = np.diag([0.5, 0.5, 3.0, 1.0])  # 0.75 mm^3 voxels
    mask = np.zeros((200, 200, 20), np.uint8)
    mask[50:130, 60:120, 4:14] = 1  # 80 x 60 x 10 voxels: 40 x 30 x 30 mm, 36 cc
    checks = TapsChecks.measure(mask, affine)
    assert checks.volume_cc == pytest.approx(36.0)
    assert checks.extent_mm == pytest.approx((30.0, 30.0, 40.0))  # slice, row, column
    assert not checks.abnormal
    assert checks.components == 1
    speck = mask.copy()
    speck[150:152, 150:152, 4] = 1  # two components, two parts in slice 4
    flagged = TapsChecks.measure(speck, affine)
    assert flagged.components == 2
    assert flagged.slices_with_several_parts == 1
    assert not flagged.slice_gaps
    assert flagged.abnormal
    gap = mask.copy()
    gap[:, :, 8] = 0  # an empty slice between occupied ones
    gap[:, :, 4:6] = 0
    gap[80, 80, 4] = 1  # and a slice of its own
    flagged = TapsChecks.measure(gap, affine)
    assert flagged.slice_gaps
    assert flagged.isolated_slices
    assert flagged.components == 3
    assert TapsChecks.measure(np.zeros_like(mask), affine).empty


# --- the whole pipeline with a stand-in model -----------------------------------------------------


def test_run_taps_returns_results_on_the_source_grid_of_an_lps_scan() -> None:
    """A stand-in model whose logits are 4 x the z-scored window: a bright ball on an LPS
    scan must come back as a ball at the same voxels of the source grid."""
    shape = (24, 96, 80)  # (slices, rows, columns) at 3.6 x 0.6 x 0.7 mm
    k, j, i = np.indices(shape)
    centre = np.array([12, 40, 50])
    distance = np.sqrt(
        ((k - centre[0]) * 3.6) ** 2 + ((j - centre[1]) * 0.6) ** 2 + ((i - centre[2]) * 0.7) ** 2
    )
    scan = np.where(distance < 15.0, 300.0, 100.0).astype(np.float32)
    affine = LPS @ np.diag([0.7, 0.6, 3.6, 1.0])
    affine[:3, 3] = (40.0, 30.0, -50.0)
    volume = Volume(array=scan, affine=affine)
    result = run_taps(volume, lambda window: 4.0 * window)
    assert result.probability.shape == shape
    assert result.probability.dtype == np.float32
    assert result.mask.shape == shape
    assert result.mask.dtype == np.uint8
    assert result.windows == 1
    ball, mask = distance < 15.0, result.mask > 0
    # The blurred logits grow the ball, but about its own centre: a flipped or swapped axis
    # would move it (the centre is off the middle of every axis).
    assert np.all(mask[ball])
    assert mask.sum() < 3 * ball.sum()
    assert np.allclose(np.argwhere(mask).mean(axis=0), centre, atol=0.1)
    assert result.probability[tuple(centre)] > 0.95
    # far outside the foreground crop the logits come back as 0, as Invertd pads them
    assert result.probability[0, 0, 0] == pytest.approx(0.5)
    assert np.array_equal(result.mask, steps.largest_component(result.probability > 0.55)[0])
    # ... which for a student means background, as TAPS's mask says there, not "unsure"
    assert result.covered is not None
    assert result.covered[tuple(centre)]
    assert not result.covered[0, 0, 0]
    taught = result.teacher_probability
    assert taught[0, 0, 0] == 0.0
    np.testing.assert_array_equal(taught[result.covered], result.probability[result.covered])


# --- the model file and import hygiene ------------------------------------------------------------


def test_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(taps.importlib.metadata, "distribution", missing)
    with pytest.raises(TapsNotInstalledError, match=r"pip install --no-deps lavlab-taps==1\.1\.2"):
        taps_model_path()


def test_importing_the_teacher_imports_no_backend_qt_or_taps() -> None:
    code = (
        "import sys, napari_kdseg.teachers.taps; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'keras', 'tensorflow', 'torch', 'monai', 'taps', 'qtpy', 'napari', 'PyQt5', 'PyQt6'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _model_or_skip() -> Path:
    try:
        return taps_model_path()
    except TapsNotInstalledError as error:
        pytest.skip(str(error))


def test_model_file_is_found_without_importing_taps() -> None:
    path = _model_or_skip()
    assert path.name == "model_v1.onnx"
    assert path.stat().st_size > 50_000_000
    assert "taps" not in sys.modules


# --- fidelity to TAPS's own mask ------------------------------------------------------------------


@pytest.mark.slow
def test_case00_matches_the_mask_taps_wrote(promise12_case: tuple[Path, Path]) -> None:
    """Issue 16's bar: Dice >= 0.97 against ``taps segment``'s mask of Case00 (about 30 s)."""
    model = _model_or_skip()
    image_path = promise12_case[0]
    reference = image_path.parents[2] / "reference" / "taps" / "promise12_Case00_taps.nii.gz"
    if not reference.exists():
        pytest.skip(f"TAPS's reference mask is missing: {reference} (it lives in ../shared/data)")
    volume = read_volume(image_path)
    result = TapsTeacher(model, threads=1)(volume)
    theirs = read_volume(reference, labels=True)
    assert theirs.same_grid(volume)
    ours, ref = result.mask > 0, theirs.array > 0
    dice = 2 * (ours & ref).sum() / (ours.sum() + ref.sum())
    assert dice >= 0.97, f"Dice {dice:.4f} against TAPS's own mask"
    assert 15.0 <= result.checks.volume_cc <= 80.0
    assert not result.checks.empty
    assert result.windows == 8
