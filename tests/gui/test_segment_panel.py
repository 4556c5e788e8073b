"""The segmentation panel in a real viewer: segment, compare, navigate, save, fail politely.

The models are the ONNX stand-ins of ``conftest.py`` (no TensorFlow in this process).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from napari.plugins.io import save_layers
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QLabel, QStyle, QStyleOptionComboBox
from toast import toast_text
from toy_onnx import HEAVY_SIZE, TOY_SIZE, threshold_onnx

from napari_kdseg._layers import volume_layers
from napari_kdseg._widgets.segment import SegmentationPanel
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.phantom import make_case
from napari_kdseg.evaluation.slices import worst_first

SHOTS = Path("/tmp/shots_seg")
IMAGE = "phantom B/Case00"
PREDICTION = f"{IMAGE} prediction"


def add_phantom(viewer: Any, size: int) -> None:
    """Phantom site B case 0 as an image layer and its mask, as the reader makes them."""
    image, label = make_case("B", 0, size=size, seed=0)
    for data, attributes, kind in volume_layers(image, label, name=IMAGE):
        getattr(viewer, f"add_{kind}")(data, **attributes)


@pytest.fixture
def panel_in_viewer(
    make_napari_viewer: Callable[..., Any], library_env: Path
) -> tuple[Any, SegmentationPanel]:
    viewer = make_napari_viewer(show=True)
    add_phantom(viewer, TOY_SIZE)
    _, panel = viewer.window.add_plugin_dock_widget("napari-kdseg", "Segmentation")
    assert isinstance(panel, SegmentationPanel), "the manifest's widget is this panel"
    return viewer, panel


def errors_since(start: int) -> list[str]:
    return [
        str(record.message)
        for record in notification_manager.records[start:]
        if record.severity == NotificationSeverity.ERROR
    ]


def segment_and_wait(qtbot: Any, panel: SegmentationPanel, timeout_ms: int = 60_000) -> None:
    qtbot.mouseClick(panel.segment_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.busy and panel.segment_button.isEnabled(), timeout=timeout_ms)


def compare_and_wait(qtbot: Any, panel: SegmentationPanel) -> None:
    qtbot.mouseClick(panel.compare_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.comparison is not None and not panel.busy, timeout=30_000)


def dice_shown(table: Any, row: int) -> float:
    """The Dice in a table row, without the words a one-sided slice adds after it."""
    return float(table.item(row, 1).text().split(":")[0])


def click_row(qtbot: Any, panel: SegmentationPanel, row: int) -> None:
    item = panel.table.item(row, 1)
    panel.table.scrollToItem(item)
    centre = panel.table.visualItemRect(item).center()
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=centre)


def test_models_are_listed_with_their_cards(
    panel_in_viewer: tuple[Any, SegmentationPanel], library_env: Path
) -> None:
    """Each model by what it is, its card in words; the file and the card's technical
    details in the tooltips."""
    _, panel = panel_in_viewer
    combo = panel.model_combo
    names = [combo.itemText(i) for i in range(combo.count())]
    assert names == ["broken.onnx (unusable)", "threshold stand-in — sites A–E"]
    tooltip = combo.itemData(1, Qt.ItemDataRole.ToolTipRole)
    assert tooltip.splitlines()[0] == str(library_env / "threshold.onnx")
    combo.setCurrentIndex(1)
    assert panel.card_label.text() == (
        "A model trained on sites A–E. On held-out scans from those sites it agreed with the "
        f"reference outlines at Dice 0.50 (1 is perfect). It reads slices resized to {TOY_SIZE} "
        f"× {TOY_SIZE} pixels."
    )
    for details in (panel.card_label.toolTip(), combo.toolTip()):
        assert f"input {TOY_SIZE}x{TOY_SIZE}x3" in details
        assert "best validation Dice 0.500" in details
        assert str(library_env / "threshold.onnx") in details


def test_models_that_read_alike_are_numbered_and_chosen_by_their_file(
    panel_in_viewer: tuple[Any, SegmentationPanel], library_env: Path, tmp_path: Path
) -> None:
    """Two exports of the same training read alike: numbered in the list, told apart by
    their files (tooltips) and chosen by path."""
    _, panel = panel_in_viewer
    second = tmp_path / "threshold-2.onnx"
    shutil.copyfile(library_env / "threshold.onnx", second)
    panel.choose_model(second)
    combo = panel.model_combo
    names = [combo.itemText(i) for i in range(combo.count())]
    assert names == [
        "broken.onnx (unusable)",
        "threshold stand-in — sites A–E (1)",
        "threshold stand-in — sites A–E (2)",
    ]
    assert panel.selected_model_path() == second
    assert combo.currentIndex() == 2
    assert combo.itemData(2, Qt.ItemDataRole.ToolTipRole).startswith(str(second))
    panel.refresh_models()  # the choice is kept by its file
    assert panel.selected_model_path() == second


def test_a_models_name_reads_whole_beside_the_distillation_panel(
    qtbot: Any, panel_in_viewer: tuple[Any, SegmentationPanel], tmp_path: Path
) -> None:
    """Docked with the distillation panel on a 1280 x 800 screen, the name of a distilled
    student fits its combo box (the box does not elide: a longer name is cut), and its card
    takes the height its lines need."""
    viewer, panel = panel_in_viewer
    distilled = {
        "architecture": "enet",
        "teacher": "unetpp.keras",
        "teacher_model": {"kind": "keras", "architecture": "unetpp"},
    }
    panel.choose_model(threshold_onnx(tmp_path / "student.onnx", card_sections=distilled))
    viewer.window.add_plugin_dock_widget("napari-kdseg", "Distillation")
    main_window = panel.window()
    main_window.resize(1280, 800)
    qtbot.wait(200)  # the docks settle
    combo = panel.model_combo
    assert combo.currentText() == "ENet distilled from UNet++ — sites A–E"
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(
        QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, combo
    )
    assert combo.fontMetrics().horizontalAdvance(combo.currentText()) <= field.width()
    # the card under it takes the height of its lines, no gaps around them
    card = panel.card_label
    assert card.height() == card.heightForWidth(card.width()) > 0


def test_layer_choices_follow_the_layer_list(
    panel_in_viewer: tuple[Any, SegmentationPanel],
) -> None:
    viewer, panel = panel_in_viewer

    def items(combo: Any) -> list[str]:
        return [combo.itemText(i) for i in range(combo.count())]

    assert items(panel.image_combo) == [IMAGE]
    assert items(panel.truth_combo) == [f"{IMAGE} prostate"]
    viewer.add_labels(np.zeros((2, 4, 4), dtype=np.uint8), name="drawn")
    assert items(panel.prediction_combo) == [f"{IMAGE} prostate", "drawn"]
    viewer.layers["drawn"].name = "drawn by hand"
    assert items(panel.truth_combo) == [f"{IMAGE} prostate", "drawn by hand"]
    viewer.layers.remove(f"{IMAGE} prostate")
    assert items(panel.truth_combo) == ["drawn by hand"]
    viewer.layers.remove(IMAGE)
    assert items(panel.image_combo) == []


def test_segment_compare_navigate_and_save(
    qtbot: Any, panel_in_viewer: tuple[Any, SegmentationPanel], tmp_path: Path
) -> None:
    viewer, panel = panel_in_viewer
    panel.choose_model(panel.model_combo.itemData(1).path)
    assert panel.image_combo.currentText() == IMAGE

    segment_and_wait(qtbot, panel)

    image = viewer.layers[IMAGE]
    prediction = viewer.layers[PREDICTION]
    assert prediction.data.shape == image.data.shape
    assert 0 < int(prediction.data.sum()) < prediction.data.size // 4
    np.testing.assert_allclose(prediction.scale, image.scale)
    np.testing.assert_allclose(
        prediction.metadata["kdseg"]["affine"], image.metadata["kdseg"]["affine"]
    )
    timing = panel.timing_label.text()
    assert "voxels, segmented in" in timing
    assert "Runs on: this computer's processor" in timing
    assert "ExecutionProvider" not in timing
    assert "onnxruntime" not in timing
    # the stages' times and the runtime's own words stay a hover away
    assert "infer" in panel.timing_label.toolTip()
    assert "total" in panel.timing_label.toolTip()
    assert "CPUExecutionProvider" in panel.timing_label.toolTip()
    assert panel.prediction_combo.currentText() == PREDICTION
    assert panel.truth_combo.currentText() == f"{IMAGE} prostate"

    compare_and_wait(qtbot, panel)

    comparison = panel.comparison
    assert comparison is not None
    assert 0 < comparison.volume.dice < 1
    assert panel.volume_label.text().startswith(f"Volume: Dice {comparison.volume.dice:.3f}")
    rows = panel.table.rowCount()
    assert rows == len(comparison.slices) > 3
    shown = [panel.row_slice(row) for row in range(rows)]
    assert shown == [s.index for s in worst_first(comparison.slices)], "worst slices first"
    dice_column = [dice_shown(panel.table, row) for row in range(rows)]
    assert dice_column == sorted(dice_column)
    # slices only one of the two masks reaches say why their Dice is 0 and HD95 n/a
    # (the tooltip in a sentence)
    for row, scores in enumerate(worst_first(comparison.slices)):
        text = panel.table.item(row, 1).text()
        if scores.truth_pixels == 0:
            assert text.endswith("none in truth"), text
        elif scores.predicted_pixels == 0:
            assert text.endswith("missed"), text
        else:
            assert ":" not in text
    assert viewer.layers[f"{IMAGE} prostate"].contour == 2
    assert prediction.contour == 2

    # A slice away from the current one, so the click must move the viewer.
    target_row = next(
        row for row in range(rows) if panel.row_slice(row) != viewer.dims.current_step[0]
    )
    click_row(qtbot, panel, target_row)
    assert viewer.dims.current_step[0] == panel.row_slice(target_row)

    # Sorting by the slice column puts slice indices in order.
    panel.table.sortItems(0, Qt.SortOrder.AscendingOrder)
    indices = [panel.row_slice(row) for row in range(rows)]
    assert indices == sorted(indices)

    start = len(notification_manager.records)
    written = panel.save_prediction(tmp_path / "prediction.nii.gz")
    assert written == [str(tmp_path / "prediction.nii.gz")]
    told = [str(record.message) for record in notification_manager.records[start:]]
    assert told == ["Saved prediction.nii.gz"]  # the file's name: the path would be cut
    assert toast_text(told[0]) == told[0]
    back = read_volume(written[0], labels=True)
    np.testing.assert_array_equal(back.array, prediction.data)
    np.testing.assert_allclose(back.affine, image.metadata["kdseg"]["affine"])
    # napari's own save path (File > Save Selected Layers) goes through the same writer.
    saved = save_layers(str(tmp_path / "via_napari.nii.gz"), [prediction], plugin="napari-kdseg")
    assert saved == [str(tmp_path / "via_napari.nii.gz")]
    np.testing.assert_allclose(read_volume(saved[0], labels=True).affine, back.affine)


def test_contours_are_red_truth_and_green_prediction(
    qtbot: Any, panel_in_viewer: tuple[Any, SegmentationPanel]
) -> None:
    viewer, panel = panel_in_viewer
    panel.choose_model(panel.model_combo.itemData(1).path)
    segment_and_wait(qtbot, panel)
    compare_and_wait(qtbot, panel)
    best = max(range(panel.table.rowCount()), key=lambda row: dice_shown(panel.table, row))
    click_row(qtbot, panel, best)
    viewer.reset_view()

    shot = viewer.screenshot(canvas_only=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    _save_png(shot, SHOTS / "compare_contours.png")
    _save_png(viewer.screenshot(canvas_only=False), SHOTS / "segmentation_panel.png")

    red, green, blue = (shot[..., channel].astype(int) for channel in range(3))
    red_pixels = int(np.sum((red > 150) & (green < 80) & (blue < 80)))
    green_pixels = int(np.sum((green > 150) & (red < 80) & (blue < 80)))
    assert red_pixels > 50, f"ground-truth contour not visible ({red_pixels} red pixels)"
    assert green_pixels > 50, f"prediction contour not visible ({green_pixels} green pixels)"


def assert_shown_whole(label: QLabel, *parts: str) -> None:
    """``label`` is on screen with ``parts`` in it, wrapping and selectable."""
    text = label.text()
    assert all(part in text for part in parts), text
    assert label.isVisible()
    assert label.wordWrap()
    assert label.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse
    assert "Traceback" not in text


def test_bad_models_are_explained_in_the_panel_and_notified_in_short(
    qtbot: Any, panel_in_viewer: tuple[Any, SegmentationPanel], tmp_path: Path
) -> None:
    viewer, panel = panel_in_viewer
    first = start = len(notification_manager.records)
    assert not panel.segment_problem_label.isVisible()

    panel.model_combo.setCurrentIndex(0)  # broken.onnx: refused before any thread starts
    qtbot.mouseClick(panel.segment_button, Qt.MouseButton.LeftButton)
    assert panel.segment_button.isEnabled()
    assert_shown_whole(panel.segment_problem_label, "Cannot segment: ", "broken.onnx")
    # napari's notification shows one line: it says where the whole reason is
    assert errors_since(start) == ["Cannot segment: see the panel"]

    # A card that disagrees with its graph passes the listing; loading it fails in the worker.
    mismatched = threshold_onnx(tmp_path / "mismatched.onnx", size=TOY_SIZE, card_size=48)
    panel.choose_model(mismatched)
    assert panel.selected_model_path() == mismatched
    start = len(notification_manager.records)
    segment_and_wait(qtbot, panel)
    assert_shown_whole(panel.segment_problem_label, "Segmentation failed: ", "mismatched.onnx")
    assert errors_since(start) == ["Segmentation failed: see the panel"]
    assert panel.timing_label.text() == "", "no 'Segmenting…' left beside the failure"
    assert PREDICTION not in viewer.layers
    assert panel.segment_button.isEnabled(), "the button comes back after a failure"

    # the next segmentation that works takes the reason away
    panel.choose_model(panel.model_combo.itemData(1).path)
    segment_and_wait(qtbot, panel)
    assert not panel.segment_problem_label.isVisible()
    assert PREDICTION in viewer.layers

    # comparing and saving tell their own failures in the comparison group
    panel.truth_combo.setCurrentText(PREDICTION)
    panel.prediction_combo.setCurrentText(PREDICTION)
    start = len(notification_manager.records)
    qtbot.mouseClick(panel.compare_button, Qt.MouseButton.LeftButton)
    assert_shown_whole(
        panel.compare_problem_label,
        "Cannot compare: ground truth and prediction are the same layer",
    )
    assert errors_since(start) == ["Cannot compare: see the panel"]
    not_a_folder = tmp_path / "a file"
    not_a_folder.write_text("")
    assert panel.save_prediction(not_a_folder / "mask.nii.gz") == []
    assert_shown_whole(panel.compare_problem_label, "Cannot save the prediction: ")
    # every notification is one short line, which napari's toast shows whole
    notified = errors_since(first)
    assert notified[-1] == "Cannot save the prediction: see the panel"
    assert [toast_text(message) for message in notified] == notified


def test_viewer_stays_responsive_while_segmenting(
    qtbot: Any, make_napari_viewer: Callable[..., Any], heavy_model: Path, library_env: Path
) -> None:
    viewer = make_napari_viewer(show=True)
    add_phantom(viewer, HEAVY_SIZE)
    panel = SegmentationPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Segmentation")
    panel.choose_model(heavy_model)
    # Load the model once, so the timed run is the segmentation itself (and adding its layer).
    segment_and_wait(qtbot, panel)
    viewer.layers.remove(PREDICTION)

    ticks: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(20)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    returned: list[float] = []  # when the worker's result reaches the GUI thread
    add_prediction = panel._add_prediction

    def timed_add_prediction(*args: Any) -> None:
        returned.append(time.perf_counter())
        add_prediction(*args)

    panel._add_prediction = timed_add_prediction  # type: ignore[method-assign]
    heartbeat.start()
    qtbot.wait(100)
    started = time.perf_counter()
    segment_and_wait(qtbot, panel)
    elapsed = time.perf_counter() - started
    qtbot.wait(60)
    heartbeat.stop()

    beats = np.array([tick for tick in ticks if tick >= started - 0.05])
    while_running = np.diff(beats[beats <= returned[0] + 0.02])
    overall = np.diff(beats)
    print(
        f"segmentation {elapsed:.2f} s ({returned[0] - started:.2f} s in the worker), "
        f"{overall.size} heartbeats, largest gap {while_running.max() * 1000:.0f} ms while "
        f"the worker ran, {overall.max() * 1000:.0f} ms including adding the layer"
    )
    assert returned[0] - started > 0.5, "the worker was too fast to measure anything"
    # The segmentation runs off the GUI thread: the viewer's timer kept firing while it ran
    # (run on the GUI thread, it would not fire at all). How long the gaps are is a speed,
    # printed above, not asserted: the cores are shared and wall-clock bounds are flaky.
    assert while_running.size >= 3, "the heartbeat stopped while the worker ran"
    assert viewer.layers[PREDICTION].data.shape == viewer.layers[IMAGE].data.shape


def _save_png(array: np.ndarray, path: Path) -> None:
    from qtpy.QtGui import QImage

    rgba = np.ascontiguousarray(array[..., :4] if array.shape[-1] == 4 else array)
    height, width = rgba.shape[:2]
    fmt = QImage.Format.Format_RGBA8888 if rgba.shape[-1] == 4 else QImage.Format.Format_RGB888
    image = QImage(rgba.data, width, height, rgba.strides[0], fmt)
    assert image.save(str(path)), f"could not write {path}"


def test_a_model_of_the_phantom_alone_warns_on_a_real_scan_only(
    qtbot: Any,
    panel_in_viewer: tuple[Any, SegmentationPanel],
    promise12_case: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    viewer, panel = panel_in_viewer
    synthetic = [{"site": s, "origin": "synthetic", "cases": 2, "labelled": 2} for s in "AB"]
    model = threshold_onnx(tmp_path / "phantom-only.onnx", training_data=synthetic)
    panel.choose_model(model)
    assert "(synthetic scans only)" in panel.card_label.text()
    warning = (
        "This model was trained only on synthetic scans; its output on a real scan is not reliable."
    )
    toast = "Not reliable on a real scan: see the panel"

    def warnings_since(start: int) -> list[str]:
        return [
            str(record.message)
            for record in notification_manager.records[start:]
            if record.severity == NotificationSeverity.WARNING
        ]

    start = len(notification_manager.records)
    segment_and_wait(qtbot, panel)  # the phantom case made in memory
    assert viewer.layers[PREDICTION].data.any()
    assert warning not in panel.timing_label.text()
    assert warnings_since(start) == []

    viewer.open(str(promise12_case[0]), plugin="napari-kdseg")
    real = next(layer.name for layer in viewer.layers if layer.name.startswith("Case00"))
    panel.image_combo.setCurrentText(real)
    segment_and_wait(qtbot, panel)
    assert warning in panel.timing_label.text()  # whole in the panel
    assert warnings_since(start) == [toast]  # in a few words that napari's toast shows whole
    assert toast_text(toast) == toast
    assert toast_text(warning) != warning, "napari's toast cuts the whole warning"


def test_the_verdict_and_the_least_certain_slices_are_shown(
    qtbot: Any, panel_in_viewer: tuple[Any, SegmentationPanel]
) -> None:
    viewer, panel = panel_in_viewer
    panel.choose_model(panel.model_combo.itemData(1).path)
    segment_and_wait(qtbot, panel)

    report = panel.quality
    assert report is not None
    assert panel.verdict_badge.isVisible()
    assert panel.verdict_badge.text().strip() == report.verdict.upper()
    text = "\n".join(label.text() for label in panel.reason_labels)
    for reason in report.reasons:
        assert reason in text
    assert "Traceback" not in text
    assert viewer.layers[PREDICTION].metadata["kdseg"]["quality"]["verdict"] == report.verdict

    # Without a ground truth the table ranks the slices by the model's uncertainty.
    table = panel.table
    assert table.horizontalHeaderItem(1).text().startswith("Uncertainty")
    rows = table.rowCount()
    assert rows == len(report.slice_uncertainty) > 3
    values = [dice_shown(table, row) for row in range(rows)]
    assert values == sorted(values, reverse=True), "least certain first"
    assert [panel.row_slice(row) for row in range(3)] == list(report.worst_slices)
    assert "Least certain slices: " + ", ".join(map(str, report.worst_slices)) in text
    table.sortItems(1, Qt.SortOrder.AscendingOrder)
    values = [dice_shown(table, row) for row in range(rows)]
    assert values == sorted(values)
    click_row(qtbot, panel, 0)
    assert viewer.dims.current_step[0] == panel.row_slice(0)

    # A comparison with the truth brings the Dice columns back.
    compare_and_wait(qtbot, panel)
    assert table.horizontalHeaderItem(1).text() == "Dice"


def test_a_new_segmentation_clears_old_scores_and_never_offers_itself_as_the_truth(
    qtbot: Any, panel_in_viewer: tuple[Any, SegmentationPanel]
) -> None:
    viewer, panel = panel_in_viewer
    panel.choose_model(panel.model_combo.itemData(1).path)
    segment_and_wait(qtbot, panel)
    compare_and_wait(qtbot, panel)
    assert panel.volume_label.text().startswith("Volume: Dice")
    # a scan without a ground truth: nothing to preselect, and least of all the prediction
    viewer.layers.remove(f"{IMAGE} prostate")
    panel.truth_combo.setCurrentText(PREDICTION)
    segment_and_wait(qtbot, panel)
    assert panel.volume_label.text() == ""
    assert panel.truth_combo.currentText() != PREDICTION


#: Reasons a phantom-trained student got on the real scan promise12_case00: the verdict's
#: longest list, which the panel once clipped beside the badge (and then cut to two lines).
LONG_REASONS = (
    "the predicted gland is 657 cc, far larger than a prostate",
    "the outline is likely poor (estimated 93% chance): its 3D shape is irregular (roundness "
    "0.07; good outlines 0.70) and 3% of it lies on the first or last slice (good outlines 0%)",
    "the model found 84 separate regions; only the largest was kept",
    "the predicted gland touches the edge of the image",
    "the predicted gland reaches the first or last slice: the scan may not cover it all",
    "the scan's pixel spacing (1.09 x 1.09 mm) is unlike any training scan (1.60-2.49 mm)",
    "the scan's slices are 1.6 mm thick; the training scans' were 3.0-3.9 mm",
    "the scan's brightness and contrast differ from every training scan (histogram distance "
    "0.31, training scans up to 0.25)",
)


def test_every_reason_of_the_verdict_is_readable_beside_the_distillation_panel(
    qtbot: Any, panel_in_viewer: tuple[Any, SegmentationPanel]
) -> None:
    """On a 1280 x 800 screen with both panels docked, each reason wraps under the badge,
    gets the height its wrapped text needs and, scrolled to, is seen whole, however wide the
    user makes the docks."""
    viewer, panel = panel_in_viewer
    distillation, _ = viewer.window.add_plugin_dock_widget("napari-kdseg", "Distillation")
    main_window = panel.window()
    main_window.resize(1280, 800)
    panel.choose_model(panel.model_combo.itemData(1).path)
    segment_and_wait(qtbot, panel)
    assert panel.quality is not None
    # an earlier verdict's reasons first: the new ones replace them
    earlier = dataclasses.replace(panel.quality, reasons=LONG_REASONS[::3])
    panel.show_quality(earlier, viewer.layers[PREDICTION])
    qtbot.wait(150)
    report = dataclasses.replace(panel.quality, reasons=LONG_REASONS)
    panel.show_quality(report, viewer.layers[PREDICTION])
    assert [label.text() for label in panel.reason_labels[: len(LONG_REASONS)]] == [
        f"• {reason}" for reason in LONG_REASONS
    ]
    for width in (400, 470, 560, 700):
        main_window.resizeDocks([distillation], [width], Qt.Orientation.Horizontal)
        qtbot.wait(150)  # the docks and the panel's layout settle
        assert (main_window.width(), main_window.height()) == (1280, 800)
        viewport = panel.scroll.viewport()
        badge = panel.verdict_badge
        badge_bottom = badge.mapTo(viewport, badge.rect().bottomLeft()).y()
        for label in panel.reason_labels:
            assert label.wordWrap()
            assert label.isVisible()
            needed = label.heightForWidth(label.width())
            assert label.height() >= needed, f"{label.text()} at {width} px: cut"
            assert label.mapTo(viewport, label.rect().topLeft()).y() > badge_bottom
            assert label.mapTo(viewport, label.rect().topRight()).x() <= viewport.width()
            panel.scroll.ensureWidgetVisible(label, 0, 0)
            qtbot.wait(10)
            assert label.visibleRegion().boundingRect() == label.rect(), label.text()
