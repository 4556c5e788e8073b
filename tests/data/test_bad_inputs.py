"""Whatever a clinical user drops on the plugin or the CLI: one clear error, nothing written.

Each bad input goes through the public entry points that meet it (``read_volume``,
``read_header``, ``discover`` + ``survey_dataset``, the preprocessing cache that training
reads, ``kdseg segment`` / ``kdseg info``) and each error must name the file and the problem.
Volumes are tiny and written with nibabel into ``tmp_path``.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_kdseg.cli import main
from napari_kdseg.core.errors import (
    DatasetError,
    DataWarning,
    DicomSeriesError,
    KdsegDataError,
    VolumeError,
)
from napari_kdseg.data import memory
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.io import read_header, read_volume
from napari_kdseg.data.preprocess import PreprocessConfig
from napari_kdseg.data.survey import survey_dataset

SHAPE = (12, 10, 4)  # file order (i, j, k)
AFFINE = np.diag([0.6, 0.6, 3.0, 1.0])
CONFIG = PreprocessConfig(size=16, context=1)


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def _scan(path: Path, seed: int = 0) -> Path:
    return _nifti(path, np.random.default_rng(seed).random(SHAPE).astype(np.float32))


def _mask(path: Path, affine: np.ndarray = AFFINE, value: int = 1) -> Path:
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:9, 3:7, 1:3] = value
    return _nifti(path, mask, affine)


def _snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _refused(error: BaseException, path: Path, *problem: str) -> None:
    text = str(error)
    assert str(path) in text, text
    for part in problem:
        assert part in text, text


@pytest.fixture
def segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., str]:
    """``kdseg segment`` on an input: asserts exit status 2, no mask, nothing new; returns stderr.

    The model is never used (the input is refused first), so a stand-in is loaded.
    """
    import napari_kdseg.inference.loading

    monkeypatch.setattr(napari_kdseg.inference.loading, "load_model", lambda *_, **__: object())
    model = tmp_path / "model.onnx"
    model.write_bytes(b"stand-in")

    def run(source: Path, *extra: str) -> str:
        out = tmp_path / "out" / "mask.nii.gz"
        out.parent.mkdir(exist_ok=True)
        before = _snapshot(tmp_path)
        status = main(["segment", str(model), str(source), "--out", str(out), *extra])
        captured = capsys.readouterr()
        assert status == 2, captured
        assert not out.exists()
        assert _snapshot(tmp_path) == before, "nothing may be written"
        assert "\n" not in captured.err.strip(), "one line, no traceback"
        return captured.err

    return run


# --- truncated, corrupt, not an image ---------------------------------------------------------


def _truncated_gz(path: Path) -> Path:
    full = _scan(path.with_name("full.nii.gz"))
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()
    return path


def _truncated_plain(path: Path) -> Path:
    full = _scan(path.with_name("full.nii"))
    path.write_bytes(full.read_bytes()[:600])
    full.unlink()
    return path


def _corrupt_gz(path: Path) -> Path:
    """Zeros in the middle of the deflate stream: nibabel alone decodes garbage voxels."""
    full = _scan(path.with_name("full.nii.gz"))
    data = bytearray(full.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    full.unlink()
    return path


@pytest.mark.parametrize(
    ("make", "name", "problem", "header_too"),
    [
        (_truncated_gz, "Case00.nii.gz", "truncated", True),
        (_truncated_plain, "Case00.nii", "file is truncated: it holds 600 bytes", True),
        (_corrupt_gz, "Case00.nii.gz", "gzip data is truncated or corrupt", False),
    ],
    ids=["truncated-gz", "truncated-nii", "corrupt-gz"],
)
def test_truncated_or_corrupt_nifti(
    tmp_path: Path,
    segment: Callable[..., str],
    make: Callable[[Path], Path],
    name: str,
    problem: str,
    header_too: bool,
) -> None:
    path = make(tmp_path / "site" / name)
    with pytest.raises(VolumeError) as caught:
        read_volume(path)
    _refused(caught.value, path, problem)
    if header_too:  # the cheap header check finds truncation, not corruption inside
        with pytest.raises(VolumeError) as caught:
            read_header(path)
        _refused(caught.value, path, "truncated")
    _refused(Exception(segment(path)), path, problem)


def test_truncated_scan_is_an_error_in_the_survey(tmp_path: Path) -> None:
    image = _truncated_gz(tmp_path / "A" / "Case00.nii.gz")
    _mask(tmp_path / "A" / "Case00_segmentation.nii.gz")
    survey = survey_dataset(discover(tmp_path / "A"))
    (error,) = survey.errors
    assert error.path == str(image)
    assert "truncated" in error.problem


def test_full_survey_finds_damage_inside_the_data_that_headers_do_not_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = _corrupt_gz(tmp_path / "A" / "Case00.nii.gz")
    _mask(tmp_path / "A" / "Case00_segmentation.nii.gz")
    array = np.random.default_rng(5).random(SHAPE).astype(np.float32)
    array[0, 0, 0] = np.nan
    with_nan = _nifti(tmp_path / "A" / "Case01.nii.gz", array)
    _mask(tmp_path / "A" / "Case01_segmentation.nii.gz")
    assert survey_dataset(discover(tmp_path / "A")).errors == []  # headers are fine
    errors = {p.path: p.problem for p in survey_dataset(discover(tmp_path / "A"), full=True).errors}
    assert "gzip data is truncated or corrupt" in errors[str(corrupt)]
    assert "scan holds 1 NaN/Inf voxel(s)" in errors[str(with_nan)]
    assert main(["info", str(tmp_path / "A"), "--full", "--strict"]) == 1
    assert "NaN/Inf" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("report.pdf", b"%PDF-1.4 not an image", "unsupported file type"),
        ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "unsupported file type"),
        ("scan.nii.gz", b"\x89PNG\r\n\x1a\n" + bytes(64), "not a readable NIfTI file"),
        ("scan.nii", b"plain text, not a header", "not a readable NIfTI file"),
        ("scan.mha", b"this is not a MetaImage header", "not a readable MetaImage"),
    ],
)
def test_file_that_is_not_an_image(
    tmp_path: Path, segment: Callable[..., str], name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VolumeError) as caught:
        read_volume(path)
    _refused(caught.value, path, problem)
    _refused(Exception(segment(path)), path, problem)


# --- 2D and 4D ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_2d_image_says_what_was_found(
    tmp_path: Path, segment: Callable[..., str], suffix: str
) -> None:
    path = tmp_path / f"slice{suffix}"
    array = np.random.default_rng(1).random((16, 12)).astype(np.float32)
    if suffix == ".mha":
        sitk.WriteImage(sitk.GetImageFromArray(array.T), str(path))
    else:
        _nifti(path, array, np.eye(4))
    message = "expected a 3D volume (slices x rows x columns), found a single 2D image (16, 12)"
    with pytest.raises(VolumeError) as caught:
        read_volume(path)
    _refused(caught.value, path, message)
    _refused(Exception(segment(path)), path, message)


def test_4d_nifti_offers_a_volume_and_reads_it(tmp_path: Path, segment: Callable[..., str]) -> None:
    series = np.random.default_rng(2).random((*SHAPE, 3)).astype(np.float32)
    path = _nifti(tmp_path / "dce.nii.gz", series)
    with pytest.raises(VolumeError) as caught:
        read_volume(path)
    _refused(caught.value, path, "found 4D (12, 10, 4, 3): 3 volumes", "volume=0..2")
    err = segment(path)
    _refused(Exception(err), path, "--volume N")

    second = read_volume(path, volume=1)
    np.testing.assert_array_equal(second.array, series[..., 1].transpose(2, 1, 0))
    np.testing.assert_allclose(second.affine, AFFINE)
    assert second.metadata["volume"] == 1
    with pytest.raises(VolumeError, match=r"volume 3 is not in 0\.\.2"):
        read_volume(path, volume=3)
    _refused(Exception(segment(path, "--volume", "3")), path, "volume 3 is not in 0..2")
    with pytest.raises(VolumeError, match="single 3D volume"):
        read_volume(_scan(tmp_path / "plain.nii.gz"), volume=1)


def test_4d_metaimage_offers_a_volume_and_reads_it(tmp_path: Path) -> None:
    series = np.random.default_rng(3).random((3, 4, 10, 12)).astype(np.float32)  # t, k, j, i
    path = tmp_path / "dce.mha"
    sitk.WriteImage(sitk.GetImageFromArray(series, isVector=False), str(path))
    with pytest.raises(VolumeError) as caught:
        read_volume(path)
    _refused(caught.value, path, "found 4D (12, 10, 4, 3)", "volume=0..2")
    with pytest.raises(VolumeError, match="found 4D"):
        read_header(path)
    np.testing.assert_array_equal(read_volume(path, volume=2).array, series[2])


# --- NaN / Inf ----------------------------------------------------------------------------


def test_scan_with_nan_or_inf_is_refused_with_the_count(
    tmp_path: Path, segment: Callable[..., str]
) -> None:
    array = np.random.default_rng(4).random(SHAPE).astype(np.float32)
    array[0, 0, :3] = np.nan
    array[1, 1, 0] = np.inf
    array[2, 2, 0] = -np.inf
    problem = "scan holds 5 NaN/Inf voxel(s) of 480"
    for path in (_nifti(tmp_path / "Case00.nii.gz", array), tmp_path / "Case00.mha"):
        if path.suffix == ".mha":
            sitk.WriteImage(sitk.GetImageFromArray(array.transpose(2, 1, 0)), str(path))
        with pytest.raises(VolumeError) as caught:
            read_volume(path)
        _refused(caught.value, path, problem, "replace them")
    _refused(Exception(segment(tmp_path / "Case00.nii.gz")), tmp_path / "Case00.nii.gz", problem)

    # training's case loading meets the same refusal, and caches nothing
    _mask(tmp_path / "Case00_segmentation.nii.gz")
    (tmp_path / "Case00.mha").unlink()
    cache = PreprocessCache(tmp_path / "cache")
    with pytest.raises(VolumeError) as caught:
        cache.prepare(discover(tmp_path).cases()[0], CONFIG)
    _refused(caught.value, tmp_path / "Case00.nii.gz", problem)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_mask_with_nan_is_refused_with_the_count(tmp_path: Path) -> None:
    mask = np.zeros(SHAPE, np.float32)
    mask[0, 0, 0] = np.nan
    path = _nifti(tmp_path / "Case00_segmentation.nii.gz", mask)
    with pytest.raises(VolumeError) as caught:
        read_volume(path, labels=True)
    _refused(caught.value, path, "label map contains 1 NaN or infinite value(s)")


# --- mask against its image ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask_shape", "mask_affine", "difference"),
    [
        ((12, 10, 5), AFFINE, "shape (5, 10, 12) vs (4, 10, 12)"),
        (SHAPE, np.diag([0.5, 0.5, 3.0, 1.0]), "spacing (3.0, 0.5, 0.5) mm vs (3.0, 0.6, 0.6) mm"),
        (
            SHAPE,
            np.array([[0.6, 0, 0, 2.0], [0, 0.6, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]]),
            "origin differs by 2 mm",
        ),
        (SHAPE, np.diag([-0.6, 0.6, 3.0, 1.0]), "axis directions differ (LAS vs RAS)"),
    ],
    ids=["shape", "spacing", "origin", "flip"],
)
def test_mask_off_its_image_grid(
    tmp_path: Path, mask_shape: tuple[int, ...], mask_affine: np.ndarray, difference: str
) -> None:
    image = _scan(tmp_path / "A" / "Case00.nii.gz")
    mask = _nifti(
        tmp_path / "A" / "Case00_segmentation.nii.gz", np.ones(mask_shape, np.uint8), mask_affine
    )
    survey = survey_dataset(discover(tmp_path / "A"))
    (error,) = survey.errors
    assert error.path == str(mask)
    assert str(image) in error.problem
    assert difference in error.problem, error.problem

    cache = PreprocessCache(tmp_path / "cache")
    with pytest.raises(VolumeError) as caught:
        cache.prepare(discover(tmp_path / "A").cases()[0], CONFIG)
    _refused(caught.value, mask, str(image), "does not lie on the grid of its image", difference)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# --- label values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (
            np.where(np.arange(480).reshape(SHAPE) % 7 == 0, -1, 1).astype(np.int16),
            "label map holds 69 voxel(s) with negative labels (down to -1)",
        ),
        (np.full(SHAPE, 0.5, np.float32), "label map holds fractional values"),
        (
            (np.arange(480).reshape(SHAPE) % 200).astype(np.int16),
            "label map holds 200 distinct values (0..199)",
        ),
    ],
    ids=["negative", "fractional", "scan-as-mask"],
)
def test_labels_with_unexpected_values(tmp_path: Path, labels: np.ndarray, problem: str) -> None:
    _scan(tmp_path / "A" / "Case00.nii.gz")
    path = _nifti(tmp_path / "A" / "Case00_segmentation.nii.gz", labels)
    with pytest.raises(VolumeError) as caught:
        read_volume(path, labels=True)
    _refused(caught.value, path, problem)
    (error,) = survey_dataset(discover(tmp_path / "A")).errors
    assert error.path == str(path)
    assert problem in error.problem
    with pytest.raises(VolumeError, match=re.escape(problem)):
        PreprocessCache(tmp_path / "cache").prepare(discover(tmp_path / "A").cases()[0], CONFIG)


def test_a_few_labels_beyond_one_are_read(tmp_path: Path) -> None:
    """Zonal masks (1 peripheral, 2 transition) and 0/255 masks are masks, not scans."""
    zones = np.zeros(SHAPE, np.uint8)
    zones[2:5, 2:5, 1] = 1
    zones[6:9, 6:9, 2] = 2
    zones[0, 0, 0] = 255
    read_volume(_nifti(tmp_path / "zones.nii.gz", zones), labels=True)


# --- empty mask ------------------------------------------------------------------------------


def test_empty_mask_is_a_survey_warning_and_skipped_by_training(tmp_path: Path) -> None:
    site = tmp_path / "A"
    for number in range(2):
        _scan(site / f"Case0{number}.nii.gz", seed=number)
    _mask(site / "Case00_segmentation.nii.gz")
    empty = _nifti(site / "Case01_segmentation.nii.gz", np.zeros(SHAPE, np.uint8))

    survey = survey_dataset(discover(site))
    assert not survey.errors
    (warning,) = survey.problems
    assert (warning.severity, warning.path, warning.case) == ("warning", str(empty), "Case01")
    assert "mask is empty" in warning.problem

    cache = PreprocessCache(tmp_path / "cache")
    with pytest.warns(DataWarning) as caught:
        prepared = cache.prepare_all(discover(site).cases(), CONFIG)
    assert [case.id for case in prepared] == ["Case00"]
    (message,) = [str(w.message) for w in caught]
    assert str(empty) in message
    assert "A/Case01 is skipped" in message
    assert "mask is empty" in message
    # an explicit choice keeps it (evaluation scores every case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(cache.prepare_all(discover(site).cases(), CONFIG, skip_empty=False)) == 2


# --- DICOM ---------------------------------------------------------------------------------


def _copy_series(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _sorted_files(folder: Path) -> list[Path]:
    return [Path(f) for f in read_volume(folder).metadata["files"]]


def test_dicom_mixed_series(
    dicom_series: list[Path], tmp_path: Path, segment: Callable[..., str]
) -> None:
    folder = tmp_path / "study"
    _copy_series(dicom_series[0], folder / "a")
    _copy_series(dicom_series[1], folder / "b")
    problem = "holds 2 series, choose one by number, description or uid"
    with pytest.raises(DicomSeriesError) as caught:
        read_volume(folder)
    _refused(caught.value, folder, problem)
    _refused(Exception(segment(folder)), folder, problem)


def test_dicom_missing_slice(
    dicom_series: list[Path], tmp_path: Path, segment: Callable[..., str]
) -> None:
    folder = _copy_series(dicom_series[0], tmp_path / "series")
    _sorted_files(folder)[7].unlink()
    _refused(Exception(segment(folder)), folder, "is missing 1 slice(s) between")


def test_dicom_slice_without_pixel_data(
    dicom_series: list[Path], tmp_path: Path, segment: Callable[..., str]
) -> None:
    folder = _copy_series(dicom_series[0], tmp_path / "series")
    victim = _sorted_files(folder)[5]
    dataset = pydicom.dcmread(victim)
    del dataset.PixelData
    dataset.save_as(victim)
    problem = "has no pixel data (no PixelData element); 1 of 19 file(s) of the series lack it"
    with pytest.raises(DicomSeriesError) as caught:
        read_volume(folder)
    _refused(caught.value, victim, problem)
    _refused(Exception(segment(folder)), victim, problem)


def test_dicom_folder_of_files_without_pixel_data(dicom_series: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for source in sorted(dicom_series[0].iterdir())[:3]:
        dataset = pydicom.dcmread(source)
        del dataset.PixelData
        dataset.save_as(folder / source.name)
    with pytest.raises(DicomSeriesError) as caught:
        read_volume(folder)
    _refused(caught.value, folder, "no DICOM image files found", "3 DICOM file(s) without pixel")


@pytest.mark.parametrize(
    ("keep", "names_the_folder", "problem"),
    [
        (1000, True, "cannot be read and may be the missing slice"),  # cut in the header
        (150_000, False, "pixel data cannot be decoded"),  # cut inside the pixels
    ],
    ids=["header", "pixels"],
)
def test_dicom_truncated_slice(
    dicom_series: list[Path],
    tmp_path: Path,
    segment: Callable[..., str],
    keep: int,
    names_the_folder: bool,
    problem: str,
) -> None:
    folder = _copy_series(dicom_series[0], tmp_path / "series")
    victim = _sorted_files(folder)[7]
    victim.write_bytes(victim.read_bytes()[:keep])  # cut short by a failed copy
    with pytest.raises(DicomSeriesError) as caught:
        read_volume(folder)
    where = folder if names_the_folder else victim
    _refused(caught.value, where, victim.name, problem)
    _refused(Exception(segment(folder)), where, victim.name, problem)


# --- folders --------------------------------------------------------------------------------


def test_empty_folder(
    tmp_path: Path, segment: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DicomSeriesError) as caught:
        read_volume(folder)
    _refused(caught.value, folder, "folder is empty")
    with pytest.raises(DatasetError) as caught:
        discover(folder)
    _refused(caught.value, folder, "folder is empty")
    _refused(Exception(segment(folder)), folder, "folder is empty")
    assert main(["info", str(folder)]) == 2
    _refused(Exception(capsys.readouterr().err), folder, "folder is empty")


def test_folder_with_files_but_no_images(
    tmp_path: Path, segment: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff" + bytes(200))
    with pytest.raises(DicomSeriesError) as caught:
        read_volume(folder)
    _refused(caught.value, folder, "no DICOM image files found among its 2 file(s)", "not DICOM")
    with pytest.raises(DatasetError) as caught:
        discover(folder)
    _refused(caught.value, folder, "no sites found among 2 file(s) (notes.txt, photo.jpg)")
    _refused(Exception(segment(folder)), folder, "no DICOM image files found")
    assert main(["info", str(folder)]) == 2
    _refused(Exception(capsys.readouterr().err), folder, "no sites found")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: chmod 000 does not stop root from reading a folder",
)
def test_unreadable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    _scan(folder / "Case00.nii.gz")
    folder.chmod(0)
    try:
        with pytest.raises(DicomSeriesError) as caught:
            read_volume(folder)
        _refused(caught.value, folder, "folder cannot be read (Permission denied)")
        with pytest.raises(DatasetError) as caught:
            discover(folder)
        _refused(caught.value, folder, "folder cannot be read (Permission denied)")
    finally:
        folder.chmod(0o755)


def test_unreadable_site_folder_is_a_problem_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What chmod 000 does to a non-root user, simulated so it runs as root too."""
    _scan(tmp_path / "A" / "Case00.nii.gz")
    _mask(tmp_path / "A" / "Case00_segmentation.nii.gz")
    locked = tmp_path / "B"
    locked.mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self: Path):  # type: ignore[no-untyped-def]
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    dataset = discover(tmp_path)
    assert dataset.site_names == ["A"]
    (problem,) = dataset.problems
    assert problem.path == str(locked)
    assert problem.problem == "folder cannot be read (Permission denied)"


# --- dataset of one site ---------------------------------------------------------------------


def test_one_site_cannot_be_left_out(tmp_path: Path) -> None:
    from napari_kdseg.experiments.grid import check_targets

    _scan(tmp_path / "A" / "Case00.nii.gz")
    _mask(tmp_path / "A" / "Case00_segmentation.nii.gz")
    dataset = discover(tmp_path)
    with pytest.raises(DatasetError) as caught:
        check_targets(dataset, ["A"])
    _refused(
        caught.value,
        tmp_path,
        "leave-one-site-out needs two or more sites, found 1 (A)",
        "scored by a model trained on the other sites",
    )


# --- too large for memory --------------------------------------------------------------------


def _huge_nifti_header(path: Path, shape: tuple[int, ...]) -> Path:
    """A NIfTI header claiming ``shape`` float32 voxels, followed by a few bytes only."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_data_offset(352)
    header.set_qform(AFFINE, code=1)
    header.set_sform(AFFINE, code=1)
    body = header.binaryblock + bytes(4) + bytes(1024)  # 352 bytes of header, then 1 KiB
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)
    return path


@pytest.mark.parametrize("name", ["Case00.nii.gz", "Case00.nii"])
def test_too_large_for_memory_is_refused_before_loading(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    segment: Callable[..., str],
    name: str,
) -> None:
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2 * 1024**3)
    path = _huge_nifti_header(tmp_path / "A" / name, (1024, 1024, 512))
    problem = (
        "scan too large to load: 1024 x 1024 x 512 voxels of 4 byte(s) need about 4.0 GiB "
        "(stored data plus a 4-byte working copy), but only 2.0 GiB of memory is available"
    )
    with pytest.raises(VolumeError) as caught:
        read_volume(path)
    _refused(caught.value, path, problem)
    _refused(Exception(segment(path)), path, problem)
    # with enough memory, the same file is found truncated, not decoded into garbage
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 64 * 1024**4)
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(path)


def test_metaimage_with_truncated_or_missing_raw_file(tmp_path: Path) -> None:
    array = np.random.default_rng(5).random((4, 10, 12)).astype(np.float32)
    header = tmp_path / "Case00.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(header))
    raw = tmp_path / "Case00.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    problem = "voxel data file Case00.raw is truncated: it holds 100 bytes where the header"
    for read in (read_volume, read_header):
        with pytest.raises(VolumeError) as caught:
            read(header)
        _refused(caught.value, header, problem)
    raw.unlink()
    with pytest.raises(VolumeError) as caught:
        read_volume(header)
    _refused(caught.value, header, f"its voxel data file {raw} does not exist")


def test_too_large_is_a_survey_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The survey estimates from the header; a MetaImage header is enough to refuse."""
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1024**3)
    site = tmp_path / "A"
    site.mkdir()
    header = site / "Case00.mhd"
    header.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 2048 2048 64\nElementType = MET_SHORT\n"
        "ElementSpacing = 0.3 0.3 3\nElementDataFile = Case00.raw\n"
    )
    with (site / "Case00.raw").open("wb") as raw:
        raw.truncate(2048 * 2048 * 64 * 2)  # sparse: the size its header says, no disk used
    _nifti(site / "Case00_segmentation.nii.gz", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(VolumeError) as caught:
        read_volume(header)
    _refused(caught.value, header, "2048 x 2048 x 64 voxels of 2 byte(s) need about 1.5 GiB")
    problems = [p for p in survey_dataset(discover(site)).errors if p.path == str(header)]
    assert len(problems) == 1
    assert "too large to load" in problems[0].problem
    assert "only 1.0 GiB of memory is available" in problems[0].problem


def test_available_memory_is_found_here() -> None:
    available = memory.available_memory_bytes()
    assert available is None or available > 0
    memory.check_fits_in_memory("small.nii.gz", (4, 4, 4), 4)  # never refused


# --- the napari reader: errors it can show as notifications ---------------------------------


def test_napari_reader_raises_data_errors_naming_the_file(tmp_path: Path) -> None:
    from napari_kdseg._reader import read_path

    series = np.zeros((*SHAPE, 2), np.float32)
    bad = [
        _truncated_gz(tmp_path / "truncated.nii.gz"),
        _nifti(tmp_path / "dce.nii.gz", series),
        _nifti(tmp_path / "nan.nii.gz", np.full(SHAPE, np.nan, np.float32)),
    ]
    for path in bad:
        with pytest.raises(KdsegDataError) as caught:
            read_path(path)
        assert str(path) in str(caught.value)
