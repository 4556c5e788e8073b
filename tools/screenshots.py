"""Screenshots of the plugin's main views for the README, taken from a real session on a
laptop-sized screen (1280 x 800) with both panels docked.

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python tools/screenshots.py docs/screenshots

It writes a small phantom dataset, opens it as a user drops a dataset folder on the viewer,
shoots the Distillation panel's settings with the Advanced section open, trains a tiny teacher
and student through it (a real child process, about two minutes on 2 cores), shoots the panel
mid-training and when done (scrolled to the results and the saved students), then segments
an unseen site's scan with the exported student in the Segmentation panel, compares it with
the ground truth and shoots the contours. Where ``../shared/data/real`` is present it also
segments the real scan ``promise12_case00`` and shoots the quality verdict with both panels
docked. ``--model X.onnx`` segments with that model instead (e.g. the demo's
``demo/enet-distilled.onnx``, which is trained long enough to look right).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import napari
from napari.layers import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_kdseg.data.phantom import generate_phantom

TARGET = "F"  # the demo's unseen site
REAL_SCAN = (
    Path(__file__).resolve().parents[1].parent
    / "shared" / "data" / "real" / "promise12_case00" / "Case00.nii.gz"
)  # fmt: skip


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Run the Qt event loop until ``condition`` holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    """Run the event loop a while: wrapped text takes a few passes to get its height (one
    pass shot the verdict's reasons cut to a line each)."""
    until = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() > until, seconds + 5, "the panels' layout to settle")


def shoot(viewer: napari.Viewer, path: Path, canvas_only: bool = False) -> None:
    settle()
    viewer.screenshot(str(path), canvas_only=canvas_only, flash=False)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    parser.add_argument("--model", type=Path, help="segment with this ONNX model")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kdseg-screenshots-"))
    data = generate_phantom(work / "phantom", cases_per_site=2, size=96, seed=0, sites="ABF")

    viewer = napari.Viewer(title="napari-kdseg")
    viewer.window._qt_window.resize(1280, 800)
    viewer.open(str(data), plugin="napari-kdseg")  # what dropping the folder does
    for layer in viewer.layers:
        layer.visible = layer.name.startswith(f"{TARGET}/Case00")
    viewer.reset_view()

    distill_dock, distill = viewer.window.add_plugin_dock_widget("napari-kdseg", "Distillation")
    segment_dock, panel = viewer.window.add_plugin_dock_widget("napari-kdseg", "Segmentation")
    # typed as a user would (the field then keeps it when the real scan is dropped later)
    distill.dataset_edit.setText(str(data))
    distill.dataset_edit.textEdited.emit(str(data))
    distill.dataset_edit.editingFinished.emit()
    distill.target_combo.setCurrentText(TARGET)
    distill.size_spin.setValue(32)
    distill.epochs_spin.setValue(2)
    distill.student_epochs_spin.setValue(2)
    distill.batch_spin.setValue(8)
    distill.width_spin.setValue(0.125)
    distill.run_folder_edit.setText(str(work / "run"))
    distill.library_edit.setText(str(work / "library"))
    distill.advanced_button.setChecked(True)
    settle()
    distill.tabs.widget(0).ensureWidgetVisible(distill.advanced_box, 0, 0)
    shoot(viewer, args.out / "distillation-setup.png")
    distill.start()
    # Mid-training: the distilled student (cell 3 of 3) is training, two runs are scored.
    wait_for(lambda: distill.progress.cell_number >= 3, 600, "the distilled student to start")
    started = time.monotonic()
    wait_for(lambda: time.monotonic() - started > 20, 30, "a few steps")
    shoot(viewer, args.out / "distillation-running.png")

    def outcome_shown() -> bool:  # the panel has shown the outcome once Cancel is off again
        return not distill.running and not distill.cancel_button.isEnabled()

    wait_for(outcome_shown, 900, "the distillation job to finish")
    if not distill.status_label.text().startswith("finished"):
        raise RuntimeError(f"the distillation did not finish: {distill.status_label.text()}")
    # Done: the results on the unseen site and the students saved for segmentation.
    distill.tabs.widget(1).ensureWidgetVisible(distill.exported_label, 0, 0)
    shoot(viewer, args.out / "distillation-done.png")
    exported = sorted((work / "library").glob("*.onnx"))
    distill_dock.hide()  # the segmentation panel gets the height for its table

    model = args.model or next(p for p in exported if "-from-" in p.name)
    panel.choose_model(model)
    panel.image_combo.setCurrentText(f"{TARGET}/Case00")
    panel.segment()
    prediction = f"{TARGET}/Case00 prediction"
    wait_for(lambda: prediction in viewer.layers and not panel.busy, 300, "the segmentation")
    panel.truth_combo.setCurrentText(f"{TARGET}/Case00 prostate")
    panel.prediction_combo.setCurrentText(prediction)
    panel.compare()
    wait_for(lambda: panel.table.rowCount() > 0 and not panel.busy, 120, "the comparison")
    # Show the slice with the most prostate: the table is worst first, the README wants a
    # typical view.
    truth = viewer.layers[f"{TARGET}/Case00 prostate"].data
    panel.go_to_slice(int(truth.reshape(truth.shape[0], -1).sum(axis=1).argmax()))
    viewer.layers[f"{TARGET}/Case00"].visible = True
    viewer.reset_view()
    shoot(viewer, args.out / "segmentation.png")
    shoot(viewer, args.out / "contours.png", canvas_only=True)
    if REAL_SCAN.is_file():
        # A phantom-trained student on a real scan: the verdict and its reasons say so, read
        # beside the distillation panel.
        distill_dock.show()
        docks = [distill_dock, segment_dock]
        viewer.window._qt_window.resizeDocks(docks, [210, 590], Qt.Orientation.Vertical)
        for layer in viewer.layers:
            layer.visible = False
        before = len(viewer.layers)
        viewer.open(str(REAL_SCAN), plugin="napari-kdseg")  # the scan and its mask
        name = next(
            layer.name for layer in list(viewer.layers)[before:] if isinstance(layer, Image)
        )
        panel.image_combo.setCurrentText(name)
        panel.segment()
        real_prediction = f"{name} prediction"
        wait_for(lambda: real_prediction in viewer.layers and not panel.busy, 300, "the real scan")
        viewer.reset_view()
        settle()
        panel.scroll.ensureWidgetVisible(panel.reason_labels[-1], 0, 0)
        panel.scroll.ensureWidgetVisible(panel.verdict_badge, 0, 0)
        shoot(viewer, args.out / "quality-verdict.png")
    viewer.close()


if __name__ == "__main__":
    main()
