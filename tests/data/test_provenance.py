"""Telling the phantom from real scans: generated datasets carry a manifest, cases made in
memory a format; everything else (the real MRI in ../shared/data) is real."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.datasets import discover, with_unlabelled
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.phantom import generate_phantom, make_case
from napari_kdseg.data.provenance import (
    REAL,
    SYNTHETIC,
    SiteData,
    is_phantom_file,
    is_phantom_scan,
    is_phantom_site,
    site_data,
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "data"
    return generate_phantom(root, cases_per_site=1, size=32, seed=0, sites="AB")


def test_a_generated_phantom_is_synthetic(phantom: Path) -> None:
    assert is_phantom_site(phantom / "A")
    case = phantom / "A" / "Case00.nii.gz"
    assert is_phantom_file(case)
    assert is_phantom_scan(read_volume(case).metadata, case)
    assert site_data("A", phantom / "A", [True]) == SiteData("A", SYNTHETIC, 1, 1)


def test_a_copied_or_unlisted_case_is_not_taken_for_the_phantom(
    phantom: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "A" / "Case00.nii.gz"
    copy.parent.mkdir()
    copy.write_bytes((phantom / "A" / "Case00.nii.gz").read_bytes())
    assert not is_phantom_file(copy)  # no manifest beside it
    assert not is_phantom_file(phantom / "A" / "Case07.nii.gz")  # not listed
    assert not is_phantom_site(tmp_path / "A")


def test_a_case_made_in_memory_is_synthetic() -> None:
    image, _ = make_case("C", 0, size=32)
    assert is_phantom_scan(image.metadata, None)


def test_real_scans_are_real(promise12_case: tuple[Path, Path], dicom_series: list[Path]) -> None:
    scan = read_volume(promise12_case[0])
    assert not is_phantom_scan(scan.metadata, scan.source)
    site = dicom_series[0].parent
    assert not is_phantom_site(site)
    assert site_data(site.name, site, [False, False]) == SiteData(site.name, REAL, 2, 0)


def test_unlabelled_folders_join_a_dataset_without_masks(
    phantom: Path, dicom_series: list[Path], tmp_path: Path
) -> None:
    folder = dicom_series[0].parent
    merged, added = with_unlabelled(discover(phantom), [folder])
    assert added == [folder.name]
    assert merged.site_names == ["A", "B", folder.name]
    assert merged.root == phantom
    assert all(case.label is None for case in merged.site(folder.name).cases)
    # a labelled folder given as unlabelled loses its masks
    merged, added = with_unlabelled(discover(dicom_series[0].parent), [phantom / "B"])
    assert added == ["B"]
    assert merged.site("B").cases[0].label is None
    with pytest.raises(DatasetError, match="site name 'A' is also the name of"):
        with_unlabelled(discover(phantom), [phantom / "A"])
