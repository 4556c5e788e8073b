"""File naming and layouts: every rule of :mod:`napari_kdseg.data.layout`, and discovery and the
napari reader following the same rules."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_kdseg import _reader
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.layout import (
    MSD_IMAGES,
    MSD_LABELS,
    VOLUME_SUFFIXES,
    case_stem,
    is_mask_file,
    is_mask_of,
    is_metaimage,
    is_metaimage_header,
    is_nifti,
    is_volume_file,
    looks_like_dicom,
    mask_case,
    msd_image_case,
    volume_suffix,
)


@pytest.mark.parametrize(
    ("name", "suffix", "stem"),
    [
        ("Case00.nii.gz", ".nii.gz", "Case00"),
        ("Case00.nii", ".nii", "Case00"),
        ("Case00.mhd", ".mhd", "Case00"),
        ("Case00.mha", ".mha", "Case00"),
        ("Case00.NII.GZ", ".nii.gz", "Case00"),
        ("case00.Nii", ".nii", "case00"),
        ("Case00.MHD", ".mhd", "Case00"),
        ("prostate.v2.nii.gz", ".nii.gz", "prostate.v2"),
        ("Case00.raw", None, None),
        ("Case00.gz", None, None),
        ("Case00.nii.zip", None, None),
        ("Case00.dcm", None, None),
        ("notes.txt", None, None),
        ("Case00", None, None),
    ],
)
def test_volume_suffix_and_case_stem(name: str, suffix: str | None, stem: str | None) -> None:
    for path in (name, Path("site") / name):
        assert volume_suffix(path) == suffix
        assert case_stem(path) == stem
        assert is_volume_file(path) is (suffix is not None)


def test_suffix_is_read_from_the_name_not_the_folders() -> None:
    assert volume_suffix(Path("scans.nii.gz") / "notes.txt") is None
    assert case_stem(Path("a.mhd") / "Case00.nii") == "Case00"


def test_nifti_and_metaimage_split_the_volume_suffixes() -> None:
    for suffix in VOLUME_SUFFIXES:
        name = f"x{suffix.upper()}"
        assert is_nifti(name) != is_metaimage(name)
    assert [is_nifti(n) for n in ("x.nii.gz", "x.NII", "x.mhd")] == [True, True, False]
    assert [is_metaimage(n) for n in ("x.mha", "x.MHD", "x.nii")] == [True, True, False]
    headers = [is_metaimage_header(n) for n in ("x.mhd", "x.MHD", "x.mha", "x.raw")]
    assert headers == [True, True, False, False]


@pytest.mark.parametrize(
    ("name", "case"),
    [
        ("Case00_segmentation.nii.gz", "Case00"),
        ("Case00_Segmentation.nii.gz", "Case00"),  # the SAML release's BMC site
        ("Case00_SEGMENTATION.nii", "Case00"),
        ("Case00_segmentation.mhd", "Case00"),  # PROMISE12
        ("Case00_segmentation.MHA", "Case00"),
        ("my_case_segmentation.nii.gz", "my_case"),
        ("Case00.nii.gz", None),
        ("Case00_seg.nii.gz", None),
        ("Case00_segmentation_1.nii.gz", None),
        ("_segmentation.nii.gz", None),  # a mask needs a case name before the mark
        ("Case00_segmentation.raw", None),  # the data file of a mask's .mhd header
        ("Case00_segmentation.txt", None),
    ],
)
def test_mask_names(name: str, case: str | None) -> None:
    assert mask_case(name) == case
    assert is_mask_file(name) is (case is not None)


def test_mask_of_a_case_in_any_capitalisation_and_format() -> None:
    assert is_mask_of("Case00_segmentation.nii.gz", "Case00")
    assert is_mask_of("case00_Segmentation.mhd", "Case00")
    assert is_mask_of("CASE00_SEGMENTATION.NII", "case00")
    assert not is_mask_of("Case01_segmentation.nii.gz", "Case00")
    assert not is_mask_of("Case00.nii.gz", "Case00")
    assert not is_mask_of("Case00_segmentation.nii.gz", "Case0")


@pytest.mark.parametrize(
    ("name", "case"),
    [
        ("prostate_00.nii.gz", "prostate_00"),  # MSD: one channel, no suffix
        ("prostate_00_0000.nii.gz", "prostate_00"),  # nnU-Net v2: channel 0000 is T2
        ("prostate_00_0001.nii.gz", None),  # another modality (ADC): not used
        ("prostate_00_0000.mha", "prostate_00"),
        ("prostate_00_000.nii.gz", "prostate_00_000"),  # three digits: not a channel
        ("prostate_0000_0000.nii.gz", "prostate_0000"),
        ("prostate_00_0000.txt", None),
        ("dataset.json", None),
    ],
)
def test_msd_image_case(name: str, case: str | None) -> None:
    assert msd_image_case(name) == case


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_dicom_is_found_by_its_preamble_whatever_its_name(tmp_path: Path) -> None:
    header = bytes(128) + b"DICM" + b"\x02\x00\x00\x00"
    assert looks_like_dicom(_write(tmp_path / "IM0001", header))
    assert looks_like_dicom(_write(tmp_path / "slice.dcm", header))
    assert looks_like_dicom(_write(tmp_path / "slice.txt", header))
    # Without the preamble (raw data sets, other files) nothing is DICOM, .dcm or not.
    assert not looks_like_dicom(_write(tmp_path / "raw.dcm", b"DICM" + bytes(200)))
    assert not looks_like_dicom(_write(tmp_path / "short.dcm", bytes(130)))
    assert not looks_like_dicom(_write(tmp_path / "empty.dcm", b""))
    assert not looks_like_dicom(_write(tmp_path / "lower", bytes(128) + b"dicm"))


def test_dicom_check_raises_for_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        looks_like_dicom(tmp_path / "missing.dcm")


def test_dicom_file_written_by_pydicom_is_recognised(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.PatientName = "Phantom"
    dataset.save_as(tmp_path / "IM0001", enforce_file_format=True)
    assert looks_like_dicom(tmp_path / "IM0001")


def _nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), path)


def test_discovery_and_reader_share_the_names(tmp_path: Path) -> None:
    site = tmp_path / "site"
    for name in ("Case00.NII.GZ", "Case00_Segmentation.nii", "Case01.nii"):
        _nifti(site / name)
    (site / "notes.txt").write_text("not a scan")
    case = discover(site).sites[0].cases[0]
    assert (case.id, case.image.name) == ("Case00", "Case00.NII.GZ")
    assert case.label is not None
    assert case.label.name == "Case00_Segmentation.nii"
    assert _reader.find_sibling_mask(site / "Case00.NII.GZ") == case.label
    assert _reader.find_sibling_mask(site / "Case01.nii") is None


def test_msd_layout_folders(tmp_path: Path) -> None:
    site = tmp_path / "Task05_Prostate"
    for name in ("prostate_00_0000.nii.gz", "prostate_00_0001.nii.gz"):
        _nifti(site / MSD_IMAGES / name)
    _nifti(site / MSD_LABELS / "prostate_00.nii.gz")
    found = discover(site).sites[0]
    assert found.layout == "msd"
    assert [(c.id, c.image.name) for c in found.cases] == [
        ("prostate_00", "prostate_00_0000.nii.gz")
    ]
