"""napari opens phantom dataset folders through the plugin's reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_kdseg.data.io import read_volume
from napari_kdseg.data.phantom import generate_phantom


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("viewer") / "phantom", 2, size=32, sites="BC")


def test_dataset_root_opens_as_site_case_layers(make_napari_viewer, dataset: Path) -> None:  # type: ignore[no-untyped-def]
    viewer = make_napari_viewer(show=True)
    viewer.open(str(dataset), plugin="napari-kdseg")
    assert [layer.name for layer in viewer.layers] == [
        f"{site}/Case0{index}{suffix}"
        for site in "BC"
        for index in (0, 1)
        for suffix in ("", " prostate")
    ]
    kinds = [type(layer).__name__ for layer in viewer.layers]
    assert kinds == ["Image", "Labels"] * 4
    for site in "BC":
        scan = read_volume(dataset / site / "Case01.nii.gz")
        for name in (f"{site}/Case01", f"{site}/Case01 prostate"):
            layer = viewer.layers[name]
            np.testing.assert_allclose(layer.scale, scan.spacing)
            np.testing.assert_allclose(layer.metadata["kdseg"]["affine"], scan.affine)
            assert layer.data.shape == scan.shape
    # site C has 1.25 mm slices and site B 3 mm ones: the layers must not share one scale
    assert viewer.layers["C/Case00"].scale[0] != viewer.layers["B/Case00"].scale[0]


def test_single_scan_opens_with_its_mask(make_napari_viewer, dataset: Path) -> None:  # type: ignore[no-untyped-def]
    viewer = make_napari_viewer(show=True)
    viewer.open(str(dataset / "B" / "Case01.nii.gz"), plugin="napari-kdseg")
    assert [layer.name for layer in viewer.layers] == ["Case01", "Case01 prostate"]
    assert viewer.layers["Case01 prostate"].data.max() == 1


def test_broken_case_becomes_a_warning_and_the_rest_opens(
    make_napari_viewer,  # type: ignore[no-untyped-def]
    dataset: Path,
    tmp_path: Path,
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    (root / "C" / "Case00.nii.gz").write_bytes(b"not a NIfTI file")
    start = len(notification_manager.records)
    viewer = make_napari_viewer(show=True)

    viewer.open(str(root), plugin="napari-kdseg")

    assert [layer.name for layer in viewer.layers] == [
        "B/Case00",
        "B/Case00 prostate",
        "B/Case01",
        "B/Case01 prostate",
        "C/Case01",
        "C/Case01 prostate",
    ]
    warnings = [
        str(record.message)
        for record in notification_manager.records[start:]
        if record.severity == NotificationSeverity.WARNING
    ]
    assert len(warnings) == 1
    assert str(root / "C" / "Case00.nii.gz") in warnings[0]
    assert "case skipped" in warnings[0]
