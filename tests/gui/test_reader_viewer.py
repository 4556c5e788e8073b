"""napari opens phantom dataset folders through the plugin's reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import napari.settings
import numpy as np
import pytest
from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog
from napari.errors import NoAvailableReaderError
from napari.plugins import _npe2
from napari.settings import NapariSettings
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import QUrl

from napari_kdseg._layers import AXIS_LABELS
from napari_kdseg._preferences import MRI_FILE_PATTERNS, open_mri_files_without_asking
from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.phantom import generate_phantom

READER = "KD prostate segmentation"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("viewer") / "phantom", 2, size=32, sites="BC")


@pytest.fixture
def reader_dialogs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], str]]:
    """The user at napari's "Choose reader" dialog, pressing OK on what it preselects; each
    dialog is recorded as (path, readers offered, reader preselected)."""
    shown: list[tuple[str, list[str], str]] = []

    def press_ok(dialog: QtReaderDialog) -> tuple[str, bool]:
        offered = [button.text() for button in dialog.reader_btn_group.buttons()]
        shown.append((dialog._current_file, offered, dialog._get_plugin_choice()))
        return dialog._get_plugin_choice(), False

    monkeypatch.setattr(QtReaderDialog, "get_user_choices", press_ok)
    return shown


def drop(viewer, path: Path) -> None:  # type: ignore[no-untyped-def]
    """What napari does with a file or folder dropped on its window."""
    url = QUrl.fromLocalFile(str(path))
    viewer.window._qt_viewer._open_from_list_of_urls_data([url], stack=False, choose_plugin=False)


def test_dropped_folders_and_scans_open_with_this_reader_preselected(
    make_napari_viewer,  # type: ignore[no-untyped-def]
    dataset: Path,
    reader_dialogs: list[tuple[str, list[str], str]],
) -> None:
    """napari 0.9.2 asks which reader to use whenever its own reader also matches the dropped
    path (it takes every folder and *.nii, *.nii.gz, *.mhd, *.mha) and no choice is saved in
    its preferences; a plugin cannot claim a path ahead of it. So this reader must be the
    one the dialog preselects: OK opens the case."""
    viewer = make_napari_viewer(show=True)
    scan = dataset / "C" / "Case00.nii.gz"

    drop(viewer, dataset / "B")
    drop(viewer, scan)

    both = [READER, "napari builtins"]
    assert reader_dialogs == [(str(dataset / "B"), both, READER), (str(scan), both, READER)]
    assert [layer.name for layer in viewer.layers] == [
        "B/Case00",
        "B/Case00 prostate",
        "B/Case01",
        "B/Case01 prostate",
        "Case00",
        "Case00 prostate",
    ]


def test_one_click_in_the_plugin_menu_opens_mri_files_without_asking(
    make_napari_viewer,  # type: ignore[no-untyped-def]
    dataset: Path,
    reader_dialogs: list[tuple[str, list[str], str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(napari.settings, "_SETTINGS", NapariSettings(config_path=None))
    viewer = make_napari_viewer(show=True)
    before = {"*.tif": "napari builtins"}  # the user's own preferences stay
    napari.settings.get_settings().plugins.extension2reader = before

    open_mri_files_without_asking()

    assert napari.settings.get_settings().plugins.extension2reader == {
        **before,
        **dict.fromkeys(MRI_FILE_PATTERNS, "napari-kdseg"),
    }
    drop(viewer, dataset / "C" / "Case00.nii.gz")
    assert reader_dialogs == []
    assert [layer.name for layer in viewer.layers] == ["Case00", "Case00 prostate"]


def test_files_of_other_formats_never_bring_this_reader_into_the_choice(
    make_napari_viewer,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    viewer = make_napari_viewer()
    for name in ("photo.png", "stack.tif", "volume.nrrd", "Case00.dcm"):
        assert "napari-kdseg" not in _npe2.get_readers(str(tmp_path / name)), name
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(NoAvailableReaderError):
        viewer.open(str(notes), plugin=None)


def test_a_dropped_folder_without_volumes_is_named_with_what_was_looked_for(
    make_napari_viewer,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    reader_dialogs: list[tuple[str, list[str], str]],
) -> None:
    folder = tmp_path / "foo"
    folder.mkdir()
    (folder / "readme.txt").write_text("no scans here")
    viewer = make_napari_viewer()

    with pytest.raises(DatasetError) as raised:
        drop(viewer, folder)

    assert [choice for *_, choice in reader_dialogs] == [READER]
    assert str(raised.value).startswith(f"{folder}: holds no MRI volumes: looked for NIfTI")
    assert str(raised.value).endswith("; it holds readme.txt")
    assert len(viewer.layers) == 0


def test_dataset_layers_are_in_millimetres_and_hidden_cases_read_when_shown(
    make_napari_viewer,  # type: ignore[no-untyped-def]
    dataset: Path,
) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.open(str(dataset), plugin="napari-kdseg")
    scale_bar = viewer.canvas.overlays.scale_bar
    scale_bar.visible = True

    assert [layer.visible for layer in viewer.layers] == [True, True] + [False] * 6
    for layer in viewer.layers:
        assert [str(unit) for unit in layer.units] == ["millimeter"] * 3, layer.name
    assert viewer.dims.axis_labels == AXIS_LABELS
    drawn = viewer.window._qt_viewer.canvas._viewer_overlay_to_visual[scale_bar][0]
    assert drawn.node.text.text.endswith(" mm")

    hidden = viewer.layers["C/Case01"]
    assert hidden.contrast_limits == [0, 1], "napari's placeholder: no voxel read yet"
    hidden.visible = True

    shown = np.asarray(hidden._slice.image.raw)
    assert hidden.contrast_limits == pytest.approx([shown.min(), shown.max()])
    assert shown.max() > 1
    scan = read_volume(dataset / "C" / "Case01.nii.gz").array
    np.testing.assert_array_equal(np.asarray(hidden.data), scan)


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
