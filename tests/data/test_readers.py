"""Readers and the label writer against the real MRI in ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_kdseg.core.atomic import atomic_path, current_umask
from napari_kdseg.core.errors import DicomSeriesError, VolumeError
from napari_kdseg.data.dicom import list_series, read_dicom_series
from napari_kdseg.data.io import read_header, read_volume, write_labels
from napari_kdseg.data.volume import Volume, lps_geometry


def test_nifti_case_geometry(promise12_case: tuple[Path, Path]) -> None:
    image_path, label_path = promise12_case
    image = read_volume(image_path)
    label = read_volume(label_path, labels=True)
    assert image.shape == (64, 128, 128)  # (slices, rows, columns) of a 128 x 128 x 64 file
    assert image.array.dtype == np.float32
    assert image.spacing == pytest.approx((1.6156, 1.0937, 1.0937), abs=1e-3)
    assert image.orientation == "LPS"
    assert label.array.dtype == np.uint8
    assert set(np.unique(label.array)) == {0, 1}
    assert image.same_grid(label)
    # Array order is the file order reversed: voxel (i, j, k) of the file is array[k, j, i].
    raw = np.asanyarray(nib.load(image_path).dataobj)
    assert image.array[10, 20, 30] == pytest.approx(raw[30, 20, 10])


def test_header_matches_full_read(promise12_case: tuple[Path, Path]) -> None:
    header = read_header(promise12_case[0])
    volume = read_volume(promise12_case[0])
    assert header.shape == volume.shape
    assert header.spacing == pytest.approx(volume.spacing)
    np.testing.assert_allclose(header.affine, volume.affine)


def test_dicom_series_sorted_along_normal(dicom_series: list[Path]) -> None:
    expected_slices = {"Prostate3T-03-0001": 19, "Prostate3T-03-0002": 21}
    for folder in dicom_series:
        volume = read_volume(folder)
        assert volume.shape == (expected_slices[folder.name], 384, 384)
        assert volume.spacing == pytest.approx((3.0, 0.5, 0.5), abs=1e-4)
        assert volume.orientation == "LPS"
        assert volume.metadata["manufacturer"].upper() == "SIEMENS"
        files = [Path(f) for f in volume.metadata["files"]]
        assert files != sorted(files), "real files are not in name order; the sort must not be"
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        cosines = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(cosines[:3], cosines[3:])
        along = [
            float(np.dot(np.asarray(h.ImagePositionPatient, dtype=float), normal)) for h in headers
        ]
        assert np.all(np.diff(along) > 2.9), "slices must ascend along the normal, 3 mm apart"
        # Each slice holds the pixels of its file (rescaled), in that order.
        middle = len(files) // 2
        pixels = pydicom.dcmread(files[middle]).pixel_array
        np.testing.assert_array_equal(volume.array[middle], pixels)


def test_dicom_affine_places_every_slice(dicom_series: list[Path]) -> None:
    """Voxel (0, 0, k) must land on slice k's ImagePositionPatient (oblique series)."""
    volume = read_volume(dicom_series[0])
    files = [Path(f) for f in volume.metadata["files"]]
    for k in (0, len(files) // 2, len(files) - 1):
        position_lps = np.asarray(pydicom.dcmread(files[k]).ImagePositionPatient, dtype=float)
        world_ras = volume.affine @ np.array([0, 0, k, 1.0])
        np.testing.assert_allclose(world_ras[:3] * [-1, -1, 1], position_lps, atol=1e-3)
    direction, spacing, _ = lps_geometry(volume.affine)
    assert spacing == pytest.approx([0.5, 0.5, 3.0], abs=1e-4)
    assert abs(direction[2, 2]) < 0.999, "this series is oblique; the affine must keep the tilt"


def _copy_series(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _sorted_files(folder: Path) -> list[Path]:
    return [Path(f) for f in read_dicom_series(folder).metadata["files"]]


def test_dicom_missing_slice_is_refused(dicom_series: list[Path], tmp_path: Path) -> None:
    folder = _copy_series(dicom_series[0], tmp_path / "series")
    files = _sorted_files(folder)
    files[7].unlink()
    with pytest.raises(DicomSeriesError, match=r"missing 1 slice\(s\)") as caught:
        read_volume(folder)
    assert str(folder) in str(caught.value)


def test_dicom_several_series_listed_then_chosen(dicom_series: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _copy_series(dicom_series[0], folder / "a")
    _copy_series(dicom_series[1], folder / "b")
    second = pydicom.dcmread(next((folder / "b").iterdir()))
    assert len(list_series(folder)) == 2
    with pytest.raises(DicomSeriesError, match="holds 2 series") as caught:
        read_volume(folder)
    assert second.SeriesInstanceUID in str(caught.value)
    volume = read_volume(folder, series=second.SeriesInstanceUID)
    assert volume.shape[0] == 21
    with pytest.raises(DicomSeriesError, match="no series matches"):
        read_volume(folder, series="not-a-series")


def test_dicom_mixed_orientation_is_refused(dicom_series: list[Path], tmp_path: Path) -> None:
    folder = _copy_series(dicom_series[0], tmp_path / "series")
    victim = _sorted_files(folder)[4]
    dataset = pydicom.dcmread(victim)
    dataset.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # a sagittal slice in an axial series
    dataset.save_as(victim)
    with pytest.raises(DicomSeriesError, match="mixes slice orientations") as caught:
        read_volume(folder)
    assert victim.name in str(caught.value)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DicomSeriesError, match="no DICOM image files"):
        read_volume(tmp_path)


def test_metaimage_matches_nifti(promise12_case: tuple[Path, Path], tmp_path: Path) -> None:
    """PROMISE12's native .mhd/.raw gives the same voxels and geometry as the NIfTI copy."""
    for source, name in (
        (promise12_case[0], "Case00.mhd"),
        (promise12_case[1], "Case00_segmentation.mhd"),
    ):
        sitk.WriteImage(sitk.ReadImage(str(source)), str(tmp_path / name))
    assert (tmp_path / "Case00.raw").exists() or (tmp_path / "Case00.zraw").exists()
    from_mhd = read_volume(tmp_path / "Case00.mhd")
    from_nifti = read_volume(promise12_case[0])
    np.testing.assert_allclose(from_mhd.array, from_nifti.array, rtol=1e-6)
    np.testing.assert_allclose(from_mhd.affine, from_nifti.affine, atol=1e-4)
    labels = read_volume(tmp_path / "Case00_segmentation.mhd", labels=True)
    assert np.issubdtype(labels.array.dtype, np.integer)
    assert read_header(tmp_path / "Case00.mhd").shape == (64, 128, 128)


@pytest.mark.parametrize("source_kind", ["nifti", "dicom"])
def test_written_mask_reopens_in_source_geometry(
    source_kind: str, promise12_case: tuple[Path, Path], dicom_series: list[Path], tmp_path: Path
) -> None:
    volume = read_volume(promise12_case[0] if source_kind == "nifti" else dicom_series[0])
    mask = (volume.array > np.percentile(volume.array, 90)).astype(np.uint8)
    out = write_labels(mask, volume, tmp_path / "mask.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"], "no temporary files left"

    reopened = nib.load(out)
    assert reopened.shape == volume.file_order_array.shape
    np.testing.assert_allclose(reopened.affine, volume.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(reopened.dataobj), mask.transpose(2, 1, 0))

    itk = sitk.ReadImage(str(out))
    direction, spacing, origin = lps_geometry(volume.affine)
    assert itk.GetSize() == volume.file_order_array.shape
    np.testing.assert_allclose(itk.GetSpacing(), spacing, atol=1e-5)
    np.testing.assert_allclose(itk.GetOrigin(), origin, atol=1e-4)
    np.testing.assert_allclose(np.reshape(itk.GetDirection(), (3, 3)), direction, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk), mask)


def test_write_refuses_wrong_shape(promise12_case: tuple[Path, Path], tmp_path: Path) -> None:
    volume = read_volume(promise12_case[0])
    with pytest.raises(VolumeError, match="does not match"):
        write_labels(np.zeros((3, 3, 3), np.uint8), volume, tmp_path / "mask.nii.gz")
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = Volume(np.zeros((2, 4, 4), np.float32), np.eye(4))
    target = tmp_path / "mask.nii.gz"
    target.write_bytes(b"previous result")

    def broken_save(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_labels(np.zeros((2, 4, 4), np.uint8), volume, target)
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.nii.gz", None, "does not exist"),
        ("broken.nii.gz", b"\x1f\x8b garbage that is not gzip", "not a readable NIfTI"),
        ("notes.txt", b"hello", "unsupported file type"),
        ("broken.mha", b"not a meta image", "not a readable MetaImage"),
    ],
)
def test_bad_files_name_file_and_problem(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VolumeError, match=message) as caught:
        read_volume(path)
    assert str(path) in str(caught.value)


def test_4d_nifti_is_refused_with_its_shape(tmp_path: Path) -> None:
    path = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), path)
    with pytest.raises(VolumeError, match=r"found 4D \(8, 8, 4, 3\)"):
        read_volume(path)


def test_fractional_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), 0.5, np.float32), np.eye(4)), path)
    with pytest.raises(VolumeError, match="fractional"):
        read_volume(path, labels=True)


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """Atomic writes start from a private temporary file; the result must not stay 0600."""
    path = tmp_path / "mask.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("done")
    old = os.umask(0o022)
    os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~old
    assert current_umask() == old
