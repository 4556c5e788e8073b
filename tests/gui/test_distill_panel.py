"""The distillation panel in a real viewer, driving real ``kdseg loso`` child processes.

The jobs are tiny (three phantom sites of two 32 x 32 cases, one epoch each, quarter width)
but real: TensorFlow trains in the child, never in this process. Each test checks what a user
sees: results and curves after a run, a clean cancel, the child's error after a failure, and
a viewer that keeps answering while the child trains.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTabWidget,
    QWidget,
)
from toast import toast_text

from napari_kdseg._widgets.distill import DistillationPanel, failure_text, runs_on
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.jobs.child import JobOutcome, JobStatus, parse_line
from napari_kdseg.jobs.plan import job_argv, pinned_settings

#: Words of the paper and of the code a clinician should not meet in a label (tooltips keep
#: them): the loss names, lambda, the presets' and ONNX Runtime's names.
JARGON = re.compile(
    r"\b(LM|KMM|AAM|lambda|ExecutionProvider|CPUExecutionProvider|onnxruntime|device)\b"
    r"|\bw/o?(?!\w)|λ|preset \(students",
    re.IGNORECASE,
)

SHOTS = Path("/tmp/shots_distill")
#: A whole run (three trainings, scoring, two ONNX exports) took 2 min 10 s on 2 busy cores.
RUN_TIMEOUT_MS = 420_000
HEARTBEAT_MS = 20


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_phantom(
        tmp_path_factory.mktemp("phantom"), cases_per_site=2, size=32, sites="ABC"
    )


@pytest.fixture
def panel(
    make_napari_viewer: Callable[..., Any],
    phantom: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[DistillationPanel]:
    """The manifest's panel, after the user dropped site A's folder on the viewer; a job
    still running at the end (a failed test) is killed."""
    monkeypatch.setenv("KDSEG_CACHE_DIR", str(tmp_path / "cache"))
    viewer = make_napari_viewer(show=True)
    viewer.open(str(phantom / "A"), plugin="napari-kdseg")
    _, widget = viewer.window.add_plugin_dock_widget("napari-kdseg", "Distillation")
    assert isinstance(widget, DistillationPanel), "the manifest's widget is this panel"
    yield widget
    if widget.job is not None:
        widget.job.kill()
        widget.job.wait(30)


def configure(panel: DistillationPanel, run_folder: Path, **fields: Any) -> None:
    """A tiny run: target C, one epoch each, 32 px, quarter width."""
    panel.target_combo.setCurrentText("C")
    panel.epochs_spin.setValue(fields.get("epochs", 1))
    panel.student_epochs_spin.setValue(fields.get("student_epochs", 1))
    panel.batch_spin.setValue(fields.get("batch_size", 8))
    panel.size_spin.setValue(32)
    panel.width_spin.setValue(0.25)
    panel.run_folder_edit.setText(str(run_folder))
    panel.run_folder_edit.textEdited.emit(str(run_folder))
    panel.library_edit.setText(str(run_folder.parent / "library"))
    panel.library_edit.editingFinished.emit()


def errors_since(start: int) -> list[str]:
    return [
        str(record.message)
        for record in notification_manager.records[start:]
        if record.severity == NotificationSeverity.ERROR
    ]


def visible_words(root: QWidget) -> list[str]:
    """Every text a user reads in ``root`` without hovering: labels, buttons, check boxes,
    group titles, tab names, combo choices, spin box texts, placeholders, table headers."""
    texts: list[str] = []
    for widget in [root, *root.findChildren(QWidget)]:
        if isinstance(widget, QLabel | QAbstractButton):
            texts.append(widget.text())
        elif isinstance(widget, QGroupBox):
            texts.append(widget.title())
        elif isinstance(widget, QTabWidget):
            texts += [widget.tabText(index) for index in range(widget.count())]
        elif isinstance(widget, QComboBox):
            texts += [widget.itemText(index) for index in range(widget.count())]
        elif isinstance(widget, QSpinBox | QDoubleSpinBox):
            texts += [widget.prefix(), widget.suffix(), widget.specialValueText()]
        elif isinstance(widget, QLineEdit):
            texts.append(widget.placeholderText())
        elif isinstance(widget, QTableWidget):
            headers = (widget.horizontalHeaderItem(c) for c in range(widget.columnCount()))
            texts += [header.text() for header in headers if header is not None]
    return [text for text in texts if text]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Heartbeat:
    """A 20 ms GUI timer recording each gap between ticks: wall-clock seconds, the GUI thread's
    CPU seconds in it (its own work, whatever else the cores run) and the panel's stage."""

    def __init__(self, panel: DistillationPanel) -> None:
        self.panel = panel
        self.gaps: list[tuple[float, float, str]] = []
        self.timer = QTimer()
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(self._tick)
        self.resume()

    def max_gap(self) -> float:
        return max((wall for wall, _, _ in self.gaps), default=0.0)

    def max_work(self) -> float:
        return max((work for _, work, _ in self.gaps), default=0.0)

    def longest(self, count: int = 3) -> str:
        return "; ".join(
            f"{wall * 1000:.0f} ms ({work * 1000:.0f} ms GUI work) at {stage!r}"
            for wall, work, stage in sorted(self.gaps)[-count:]
        )

    def pause(self) -> None:
        self.timer.stop()

    def resume(self) -> None:
        self._last = (time.perf_counter(), time.thread_time())
        self.timer.start()

    def _tick(self) -> None:
        now = (time.perf_counter(), time.thread_time())
        wall, work = now[0] - self._last[0], now[1] - self._last[1]
        self.gaps.append((wall, work, self.panel.stage_label.text()))
        self._last = now


def test_the_dropped_dataset_is_offered_with_its_sites_roles_and_problems(
    panel: DistillationPanel, phantom: Path, tmp_path: Path
) -> None:
    assert panel.dataset_edit.text() == str(phantom)
    assert phantom.name in panel.dropped_button.text()
    panel.target_combo.setCurrentText("B")
    rows = [
        [panel.sites_table.item(row, column).text() for column in range(4)]
        for row in range(panel.sites_table.rowCount())
    ]
    assert rows == [
        ["A", "training: teacher + student", "2", "2"],
        ["B", "target (unseen)", "2", "2"],
        ["C", "training: teacher + student", "2", "2"],
    ]
    assert panel.start_button.isEnabled()
    assert panel.problems_label.text() == "Problems: none found in the file names"

    panel.set_dataset(phantom / "A")
    assert "leave-one-site-out needs two or more sites" in panel.plan_label.text()
    assert not panel.start_button.isEnabled()

    panel.set_dataset(tmp_path / "nowhere")
    assert "folder does not exist" in panel.problems_list.item(0).text()
    assert panel.problems_list.isVisibleTo(panel)
    assert "choose a dataset folder" in panel.plan_label.text()

    shutil.copytree(phantom, tmp_path / "copy")
    (tmp_path / "copy" / "B" / "Case01_segmentation.nii.gz").unlink()
    panel.set_dataset(tmp_path / "copy")
    assert panel.problems_label.text() == "Problems (1)"
    assert "image without mask" in panel.problems_list.item(0).text()
    assert panel.sites_table.item(1, 3).text() == "1"  # site B: one labelled case of two


def test_the_dataset_field_follows_the_newest_drop_until_the_user_types_a_path(
    panel: DistillationPanel, phantom: Path, tmp_path: Path, qtbot: Any
) -> None:
    other = generate_phantom(tmp_path / "other", cases_per_site=1, size=32, sites="DE")
    assert panel.dataset_edit.text() == str(phantom)
    panel.viewer.open(str(other / "D"), plugin="napari-kdseg")
    assert panel.dataset_edit.text() == str(other)
    assert panel.target_combo.currentText() in ("D", "E")
    assert not panel.dropped_button.isEnabled()  # the field holds the dropped folder

    # a path of the user's own stays; the newest drop is offered on the button
    panel.dataset_edit.setText(str(phantom))
    panel.dataset_edit.textEdited.emit(str(phantom))
    panel.dataset_edit.editingFinished.emit()
    panel.viewer.open(str(other / "E"), plugin="napari-kdseg")
    assert panel.dataset_edit.text() == str(phantom)
    assert panel.dropped_button.isEnabled()
    assert other.name in panel.dropped_button.text()
    assert str(other) in panel.dropped_button.toolTip()
    qtbot.mouseClick(panel.dropped_button, Qt.MouseButton.LeftButton)
    assert panel.dataset_edit.text() == str(other)
    # taking the dropped folder follows drops again
    panel.viewer.open(str(phantom / "B"), plugin="napari-kdseg")
    assert panel.dataset_edit.text() == str(phantom)


def test_start_cancel_progress_and_status_stay_in_view_on_a_laptop_screen(
    panel: DistillationPanel, qtbot: Any
) -> None:
    """Docked beside the segmentation panel in a 1280 x 800 window, the settings scroll and
    the controls under them stay on screen."""
    panel.viewer.window.add_plugin_dock_widget("napari-kdseg", "Segmentation")
    main_window = panel.window()  # the viewer's Qt main window, holding the docks
    main_window.resize(1280, 800)
    qtbot.waitUntil(lambda: main_window.size().height() <= 800)
    qtbot.wait(100)  # the docks settle
    assert (main_window.width(), main_window.height()) == (1280, 800)
    for widget in (panel.start_button, panel.cancel_button, panel.progress_bar, panel.status_label):
        assert widget.isVisible()
        corners = (widget.rect().topLeft(), widget.rect().bottomRight())
        assert all(main_window.rect().contains(widget.mapTo(main_window, c)) for c in corners)
    for page in range(panel.tabs.count()):
        assert isinstance(panel.tabs.widget(page), QScrollArea)


def test_the_labels_speak_plainly_and_the_tooltips_keep_the_papers_terms(
    panel: DistillationPanel,
) -> None:
    panel.advanced_button.setChecked(True)
    for preset in range(panel.preset_combo.count()):
        panel.preset_combo.setCurrentIndex(preset)
        words = visible_words(panel)
        assert words, "the panel shows some text"
        jargon = [text for text in words if JARGON.search(text)]
        assert jargon == [], jargon
    assert panel.width_spin.text() == "as the preset"
    assert panel.width_spin.toolTip().endswith("As the preset: full-size for both")  # paper's
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("cpu"))
    for name, short in (("logits", "LM"), ("kernel_matrix", "KMM"), ("affinity", "AAM")):
        assert panel.loss_checks[name].toolTip().startswith(short)
        assert panel.lambda_spins[name].toolTip().startswith(f"λ of {short}")
    assert "quarter-size teachers" in panel.width_spin.toolTip()
    advanced = {
        panel.pixel_mm_spin: "--pixel-mm",
        panel.intensity_combo: "--intensity",
        panel.augment_combo: "--augment",
        panel.teacher_labels_check: "--teacher-labels",
        panel.logits_direction_combo: "--logits-direction",
        panel.distil_unlabelled_only_check: "--distil-on",
    }
    for widget, option in advanced.items():
        assert widget.toolTip().startswith(option)


def test_the_advanced_options_are_folded_away_and_reach_the_command(
    panel: DistillationPanel, qtbot: Any, tmp_path: Path
) -> None:
    configure(panel, tmp_path / "run")
    assert not panel.advanced_box.isVisibleTo(panel)
    qtbot.mouseClick(panel.advanced_button, Qt.MouseButton.LeftButton)
    assert panel.advanced_box.isVisibleTo(panel)
    argv = job_argv(panel.settings())
    for option in ("--pixel-mm", "--intensity", "--augment", "--teacher-labels"):
        assert option not in argv  # off by default, as in the paper

    # the grid takes the scan options; the two of one distillation wait for a ready teacher
    panel.pixel_mm_spin.setValue(0.8)
    panel.intensity_combo.setCurrentIndex(panel.intensity_combo.findData("local"))
    panel.augment_combo.setCurrentIndex(panel.augment_combo.findData("scanner-shift"))
    assert not panel.teacher_labels_check.isEnabled()
    assert not panel.logits_direction_combo.isEnabled()
    assert not panel.distil_unlabelled_only_check.isEnabled()
    assert panel.distill_only_label.isVisibleTo(panel)
    argv = job_argv(panel.settings())
    assert argv[3] == "loso"
    assert argv[argv.index("--pixel-mm") + 1] == "0.8"
    assert argv[argv.index("--intensity") + 1] == "local"
    assert argv[argv.index("--augment") + 1] == "scanner-shift"
    assert panel.start_button.isEnabled(), panel.plan_label.text()

    # from TAPS with scans without masks: one kdseg distill, which takes all five
    unlabelled = tmp_path / "dicom"
    unlabelled.mkdir()
    panel.teacher_combo.setCurrentIndex(panel.teacher_combo.findData("taps"))
    panel.unlabelled_edit.setText(str(unlabelled))
    panel.unlabelled_edit.editingFinished.emit()
    assert panel.teacher_labels_check.isEnabled()
    assert panel.logits_direction_combo.isEnabled()
    assert not panel.distill_only_label.isVisibleTo(panel)
    panel.teacher_labels_check.setChecked(True)
    hinton = panel.logits_direction_combo.findData("hinton")
    panel.logits_direction_combo.setCurrentIndex(hinton)
    panel.distil_unlabelled_only_check.setChecked(True)
    argv = job_argv(panel.settings())
    assert argv[3] == "distill"
    assert "--teacher-labels" in argv
    assert argv[argv.index("--distil-on") + 1] == "unlabelled"
    assert argv[argv.index("--logits-direction") + 1] == "hinton"
    assert argv[argv.index("--pixel-mm") + 1] == "0.8"
    assert argv[argv.index("--intensity") + 1] == "local"
    assert argv[argv.index("--augment") + 1] == "scanner-shift"
    assert "scans without a mask learn from the teacher's masks" in panel.plan_label.text()
    assert panel.start_button.isEnabled(), panel.plan_label.text()

    # back to a teacher trained in the run: the grid's command, without the two
    panel.unlabelled_edit.setText("")
    panel.unlabelled_edit.editingFinished.emit()
    panel.teacher_combo.setCurrentIndex(panel.teacher_combo.findData("unetpp"))
    argv = job_argv(panel.settings())
    assert argv[3] == "loso"
    assert "--teacher-labels" not in argv
    assert "--logits-direction" not in argv
    assert panel.start_button.isEnabled(), panel.plan_label.text()


def test_learning_from_a_teacher_files_masks_switches_off_what_needs_its_features(
    panel: DistillationPanel, tmp_path: Path
) -> None:
    configure(panel, tmp_path / "run")
    teacher = tmp_path / "unetpp.keras"
    teacher.write_bytes(b"a teacher")
    unlabelled = tmp_path / "dicom"
    unlabelled.mkdir()
    panel.teacher_combo.setCurrentIndex(panel.teacher_combo.count() - 1)
    panel.teacher_file_edit.setText(str(teacher))
    panel.unlabelled_edit.setText(str(unlabelled))
    panel.unlabelled_edit.editingFinished.emit()
    assert panel.loss_checks["kernel_matrix"].isChecked()
    panel.teacher_labels_check.setChecked(True)
    assert not panel.loss_checks["kernel_matrix"].isChecked()
    argv = job_argv(panel.settings())
    assert "--precompute-teacher" in argv
    assert "kernel_matrix" not in argv
    assert panel.start_button.isEnabled(), panel.plan_label.text()


def test_the_setup_fits_the_dock_with_the_advanced_options_open(
    panel: DistillationPanel, qtbot: Any
) -> None:
    """At 1280 x 800 beside the segmentation panel, nothing of the setup is cut at the
    right: the page scrolls down only."""
    panel.viewer.window.add_plugin_dock_widget("napari-kdseg", "Segmentation")
    main_window = panel.window()
    main_window.resize(1280, 800)
    panel.advanced_button.setChecked(True)
    panel.teacher_combo.setCurrentIndex(panel.teacher_combo.findData("taps"))
    qtbot.wait(200)  # the docks settle
    for page in range(panel.tabs.count()):
        panel.tabs.setCurrentIndex(page)
        qtbot.wait(50)
        assert panel.tabs.widget(page).horizontalScrollBar().maximum() == 0, page
    panel.tabs.setCurrentIndex(0)
    scroll = panel.tabs.widget(0)
    assert isinstance(scroll, QScrollArea)
    viewport = scroll.viewport()
    for widget in panel.advanced_box.findChildren(QWidget):
        if widget.isVisibleTo(panel):
            right = widget.mapTo(viewport, widget.rect().topRight()).x()
            assert right <= viewport.width(), type(widget).__name__


def test_an_input_size_unetpp_cannot_take_keeps_start_off_and_says_why(
    panel: DistillationPanel, tmp_path: Path
) -> None:
    configure(panel, tmp_path / "run")
    assert panel.start_button.isEnabled()
    panel.size_spin.setValue(8)
    sentence = "Input size 8: UNet++ needs a multiple of 16, for example 16 or 32"
    assert not panel.start_button.isEnabled()
    assert sentence in panel.status_label.text()
    assert sentence in panel.plan_label.text()
    first = len(notification_manager.records)
    panel.start()  # as a script could: refused, the reason in the panel, a short notification
    assert panel.job is None
    assert sentence in panel.status_label.text()
    assert errors_since(first) == ["Distillation cannot start yet: see the panel"]
    assert toast_text(errors_since(first)[0]) == errors_since(first)[0]  # napari shows it whole
    panel.size_spin.setValue(32)
    assert panel.start_button.isEnabled()
    assert panel.status_label.text() == "ready to start"


def test_a_settings_change_moves_the_run_to_a_free_folder_instead_of_failing(
    panel: DistillationPanel, tmp_path: Path
) -> None:
    """A run folder pinning other settings (``grid.json``, as ``kdseg loso`` writes it)
    would make Start fail: the panel proposes the first free folder beside it instead."""
    run = tmp_path / "run"
    configure(panel, run)
    earlier = dataclasses.replace(panel.settings(), epochs=5)
    run.mkdir()
    (run / "grid.json").write_text(json.dumps(pinned_settings(earlier)))
    first = len(notification_manager.records)

    panel.student_epochs_spin.setValue(2)

    assert panel.run_folder_edit.text() == str(tmp_path / "run-2")
    assert panel.status_label.text() == (
        f"The earlier run in {run} used other settings (teacher epochs, student epochs); it "
        f"stays as it is, and this run goes to {tmp_path / 'run-2'}."
    )
    assert panel.start_button.isEnabled()
    assert "✗" not in panel.plan_label.text()
    assert "color" not in panel.status_label.styleSheet()
    assert errors_since(first) == []
    assert job_argv(panel.settings())[job_argv(panel.settings()).index("--out") + 1] == str(
        tmp_path / "run-2"
    )

    # a folder the user types is theirs: it stays, and Start waits with the reason
    panel.run_folder_edit.setText(str(run))
    panel.run_folder_edit.textEdited.emit(str(run))
    assert panel.run_folder_edit.text() == str(run)
    assert not panel.start_button.isEnabled()
    assert "holds a run made with other settings" in panel.status_label.text()
    assert f"for example {tmp_path / 'run-2'}" in panel.status_label.text()


def _json(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, "time": 100.0, **fields})


#: What a ``kdseg loso --json`` child prints, as (stream, line): events, TensorFlow's start-up
#: logging, the Markdown report printed for terminals, and the command's own error line.
CHILD_OUTPUT = [
    ("stderr", "WARNING: All log messages before absl::InitializeLog() is called are written"),
    ("stderr", "I0000 00:00:1795916075.846546   28162 port.cc:153] oneDNN custom operations"),
    ("stderr", "E0000 00:00:1795916075.847522   28162 cuda_dnn.cc:8310] Unable to register"),
    ("stderr", "Could not find cuda drivers on your machine, GPU will not be used."),
    ("stdout", _json("cell", number=1, cells=3, target="C", model="unetpp", variant="teacher")),
    ("stdout", _json("start", epochs=2, steps_per_epoch=4, initial_epoch=0, device="cpu")),
    ("stdout", _json("step", epoch=1, step=2, steps=4, loss=0.9)),
    *[("stdout", _json("epoch", epoch=1, epochs=2, val_dice=0.5)) for _ in range(60)],
    ("stdout", _json("cell_done", mean=0.61, std=0.02, n=2, skipped=False)),
    ("stdout", _json("report", table="/runs/x/table2.md")),
    ("stdout", "# Leave one site out: teachers, and students"),
    ("stdout", "| Dice | C | mean |"),
    ("stdout", "|---|---|---|"),
    ("stdout", "| UNet++ | 0.610 ± 0.020 | 0.610 |"),
    ("stdout", "Mean ± std over the target site's cases"),
    (
        "stdout",
        _json(
            "exported",
            path="/library/enet-from-unetpp-AAM-KMM-LM-unseen-C.onnx",
            model="enet",
            variant="+AAM + KMM + LM",
            target="C",
            teacher="unetpp",
        ),
    ),
    ("stderr", "kdseg loso: /runs/x: the disk is full"),
]


def test_the_log_speaks_plainly_shows_the_newest_line_and_keeps_the_raw_log_a_click_away(
    panel: DistillationPanel, qtbot: Any
) -> None:
    panel.tabs.setCurrentIndex(1)
    panel._take([parse_line(line, stream) for stream, line in CHILD_OUTPUT])
    qtbot.wait(50)  # the views lay their text out

    shown = panel.log_view.toPlainText()
    for noise in ("{", "I0000", "E0000", "WARNING: All log messages", "|", "# Leave"):
        assert noise not in shown
    assert "cuda" not in shown.lower()
    assert "Mean ± std over" not in shown  # the rest of the report printed for terminals
    assert shown.splitlines()[:3] == [
        "Model 1 of 3: UNet++ (teacher), trained without site C and then scored on it.",
        "Training for 2 epochs of 4 steps each, on the CPU.",
        "Epoch 1 of 2 done: validation Dice 0.500.",
    ]
    assert shown.splitlines()[-4:] == [
        "UNet++ (teacher): Dice 0.610 ± 0.020 on site C (2 cases).",
        "All models scored: the results table below shows how well.",
        "Saved ENet distilled from UNet++ (all three ways), unseen site C to the model library; "
        "the Segmentation panel lists it.",
        "kdseg loso: /runs/x: the disk is full",
    ]
    # the stage and the saved students in words; the paper's names and the files in tooltips
    saved = "ENet distilled from UNet++ (all three ways), unseen site C"
    assert panel.stage_label.text() == f"saved for segmentation: {saved}"
    assert panel.exported_label.text() == f"Students saved for the Segmentation panel:\n{saved}"
    path = "/library/enet-from-unetpp-AAM-KMM-LM-unseen-C.onnx"
    assert panel.exported_label.toolTip() == path
    assert panel.stage_label.toolTip() == f"ENet w/ +AAM + KMM + LM, teacher UNet++: {path}"
    results = panel.results_table.item(0, 1)
    assert (results.text(), results.toolTip()) == (
        "teacher",
        "the paper's Table 2 calls this row teacher",
    )
    jargon = [text for text in visible_words(panel) if JARGON.search(text) or "/" in text]
    assert jargon == [], jargon
    bar = panel.log_view.verticalScrollBar()
    assert 0 < bar.maximum() == bar.value(), "the newest line is in view"
    # the layout making the log shorter (a stage of two lines, say) keeps it in view ...
    panel.log_views.setMinimumHeight(0)
    panel.log_views.setMaximumHeight(panel.log_views.height() // 2)
    qtbot.wait(50)
    assert 0 < bar.maximum() == bar.value(), "the newest line is still in view"
    # ... unless the user scrolled up to read
    bar.setValue(0)
    panel.log_views.setMaximumHeight(panel.log_views.height() - 10)
    qtbot.wait(50)
    assert bar.value() == 0

    qtbot.mouseClick(panel.raw_log_button, Qt.MouseButton.LeftButton)
    assert panel.log_views.currentWidget() is panel.raw_log_view
    assert panel.raw_log_button.text() == "Show plain log"
    assert panel.raw_log_view.toPlainText().splitlines() == [line for _, line in CHILD_OUTPUT]
    qtbot.mouseClick(panel.raw_log_button, Qt.MouseButton.LeftButton)
    assert panel.log_views.currentWidget() is panel.log_view


def _child_printing(*lines: str, exit_status: int = 0) -> list[str]:
    """A stand-in for ``kdseg loso``: prints ``lines`` and exits (starts in milliseconds)."""
    code = f"import sys\nprint({chr(10).join(lines)!r}, flush=True)\nsys.exit({exit_status})"
    return [sys.executable, "-c", code]


def test_starting_the_same_run_folder_again_keeps_the_curves_of_the_resumed_training(
    panel: DistillationPanel, qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = {"number": 1, "cells": 3, "target": "C", "model": "unetpp", "variant": "teacher"}
    cancelled = _child_printing(
        _json("cell", **cell),
        _json("start", epochs=2, steps_per_epoch=4, initial_epoch=0, device="cpu"),
        _json("step", epoch=1, step=4, steps=4, loss=0.9),
        _json("epoch", epoch=1, epochs=2, val_dice=0.3),
        _json("stopped", epochs_done=1),
        exit_status=3,
    )
    resumed = _child_printing(
        _json("cell", **cell),
        _json("resumed", epochs_done=1, checkpoint="resume/"),
        _json("start", epochs=2, steps_per_epoch=4, initial_epoch=1, device="cpu"),
        _json("step", epoch=2, step=4, steps=4, loss=0.7),
        _json("epoch", epoch=2, epochs=2, val_dice=0.5),
    )
    configure(panel, tmp_path / "run")
    for child in (cancelled, resumed):
        monkeypatch.setattr("napari_kdseg._widgets.distill.job_argv", lambda _s, c=child: c)
        panel.start()
        # where it runs in words; the process and its log for whoever hovers
        assert panel.status_label.text() == "running: see Progress and results"
        assert panel.status_label.toolTip() == (
            f"process {panel.job.pid}; log: {tmp_path / 'run' / 'job.log'}"
        )
        qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
        qtbot.wait(300)  # the last poll

    (curve,) = panel.progress.curves
    assert (curve.loss_steps, curve.losses) == ([4, 8], [0.9, 0.7])
    assert (curve.dice_epochs, curve.dices) == ([1, 2], [0.3, 0.5])
    assert panel.curves.points == (2, 2)


def test_a_long_error_is_shown_whole_under_the_pages_on_a_laptop_screen(
    panel: DistillationPanel, qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's own error, however long, wraps in the status under the pages and is seen
    whole beside the segmentation panel at 1280 x 800; the notification stays one line."""
    problem = (
        f"{tmp_path / 'a' / 'long' / 'path' / 'to' / 'the' / 'dataset'}: the disk is full "
        "while writing the preprocessed slices of site B; free some space, or choose a cache "
        "folder on another disk, and start again: the finished models are kept"
    )
    failing = [
        sys.executable,
        "-c",
        f"import sys; print({f'kdseg loso: {problem}'!r}, file=sys.stderr); sys.exit(2)",
    ]
    monkeypatch.setattr("napari_kdseg._widgets.distill.job_argv", lambda _settings: failing)
    segmentation, _ = panel.viewer.window.add_plugin_dock_widget("napari-kdseg", "Segmentation")
    main_window = panel.window()
    main_window.resize(1280, 800)
    # the segmentation panel given most of the height, as a user may drag the splitter
    docks = [segmentation, panel.parentWidget()]
    main_window.resizeDocks(docks, [700, 50], Qt.Orientation.Vertical)
    configure(panel, tmp_path / "run")
    first = len(notification_manager.records)
    panel.start()
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
    qtbot.waitUntil(
        lambda: (
            panel.cancel_button.isEnabled() is False and "stopped" in (panel.status_label.text())
        ),
        timeout=5_000,
    )
    qtbot.wait(200)  # the docks make room for the status

    label = panel.status_label
    assert label.text() == (
        f"The training stopped with an error: {problem}\nThe whole log: {panel.job.log_path}"
    )
    assert label.height() >= label.heightForWidth(label.width())
    assert label.visibleRegion().boundingRect() == label.rect()
    bottom = label.mapTo(main_window, label.rect().bottomRight())
    assert main_window.rect().contains(bottom)
    assert errors_since(first) == ["Distillation failed: see the panel"]


@pytest.mark.slow
def test_a_tiny_real_run_fills_results_and_curves_and_the_viewer_stays_responsive(
    panel: DistillationPanel, qtbot: Any, tmp_path: Path
) -> None:
    configure(panel, tmp_path / "run")
    exported: list[str] = []
    panel.model_exported.connect(exported.append)
    SHOTS.mkdir(exist_ok=True)
    heartbeat = Heartbeat(panel)
    started = time.perf_counter()
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.running
    assert not panel.start_button.isEnabled()

    qtbot.waitUntil(
        lambda: bool(panel.progress.curves and panel.progress.curves[-1].dices), timeout=240_000
    )
    heartbeat.pause()  # the screenshot is the test's, not the panel's
    panel.curves.redraw_if_due(force=True)
    panel.viewer.screenshot(str(SHOTS / "gui_mid_training.png"), canvas_only=False)
    heartbeat.resume()
    mid_stage = panel.stage_label.text()
    assert panel.device_label.text() == "Runs on: this computer's processor"
    assert 0 < panel.progress_bar.value() < panel.progress_bar.maximum()

    qtbot.waitUntil(lambda: not panel.running, timeout=RUN_TIMEOUT_MS)
    qtbot.wait(300)  # the last poll
    heartbeat.timer.stop()
    seconds = time.perf_counter() - started
    panel.viewer.screenshot(str(SHOTS / "gui_finished.png"), canvas_only=False)
    print(
        f"\nreal run {seconds:.0f} s; heartbeat {len(heartbeat.gaps)} ticks, "
        f"{sum(wall > 0.2 for wall, _, _ in heartbeat.gaps)} gaps over 200 ms, longest: "
        f"{heartbeat.longest()}; GUI work at most {heartbeat.max_work() * 1000:.0f} ms; "
        f"curves drawn {panel.curves.draws} times"
    )

    assert panel.job is not None
    assert panel.job.status is JobStatus.FINISHED, panel.job.outcome().message
    assert "model 1 of 3: UNet++ (teacher), unseen site C" in mid_stage
    assert panel.status_label.text() == "finished: see Progress and results"
    assert f"run folder: {tmp_path / 'run'}" in panel.status_label.toolTip()
    rows = [
        [panel.results_table.item(row, column).text() for column in range(3)]
        for row in range(panel.results_table.rowCount())
    ]
    assert [row[:2] for row in rows] == [
        ["UNet++", "teacher"],
        ["ENet", "alone"],
        ["ENet", "distilled (all three ways)"],
    ]
    assert panel.results_table.item(2, 1).toolTip().endswith("w/ +AAM + KMM + LM")
    assert all(" ± " in row[2] for row in rows)
    assert "Dice on C" in panel.results_table.horizontalHeaderItem(2).text()
    loss_points, dice_points = panel.curves.points
    assert loss_points >= 3
    assert dice_points == 3
    assert [Path(path).name for path in exported] == [
        "enet-unseen-C.onnx",
        "enet-from-unetpp-AAM-KMM-LM-unseen-C.onnx",
    ]
    assert all(Path(path).is_file() and path in panel.exported_label.toolTip() for path in exported)
    assert panel.exported_label.text().splitlines()[1:] == [
        "ENet alone, unseen site C",
        "ENet distilled from UNet++ (all three ways), unseen site C",
    ]
    finished = [panel.stage_label.text(), panel.log_view.toPlainText()]
    assert not any(JARGON.search(text) or ".onnx" in text for text in finished), finished
    assert (tmp_path / "run" / "results.csv").is_file()
    assert "ended: exit status 0" in (tmp_path / "run" / "job.log").read_text()
    assert panel.progress_bar.value() == panel.progress_bar.maximum()
    assert panel.start_button.isEnabled()
    # the job runs in a child process: the viewer's timer kept firing throughout (how long
    # its gaps are is printed above, not asserted: wall-clock bounds on shared cores flake)
    assert len(heartbeat.gaps) >= seconds / 2, heartbeat.longest()


@pytest.mark.slow
def test_cancel_stops_the_child_and_keeps_the_viewer(
    panel: DistillationPanel, qtbot: Any, tmp_path: Path
) -> None:
    configure(panel, tmp_path / "run", batch_size=2)  # 16 steps an epoch: steps 10 and 16 report
    panel.start()
    assert panel.job is not None
    pid = panel.job.pid
    assert pid is not None
    qtbot.waitUntil(lambda: any(curve.losses for curve in panel.progress.curves), timeout=240_000)
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert "cancelling" in panel.status_label.text()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    qtbot.wait(300)

    assert panel.job.status is JobStatus.CANCELLED
    assert panel.status_label.text() == "cancelled — Start resumes from the last checkpoint"
    assert process_gone(pid)
    assert panel.start_button.isEnabled()
    assert not panel.cancel_button.isEnabled()
    assert "cancel requested: SIGTERM sent" in (tmp_path / "run" / "job.log").read_text()
    assert panel.viewer.layers  # the viewer is alive and answering
    assert panel.window().isVisible()


def test_a_failing_child_shows_its_error(
    panel: DistillationPanel, qtbot: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "teacher.keras"
    broken.write_bytes(b"not a keras archive")
    configure(panel, tmp_path / "run")
    panel.teacher_combo.setCurrentIndex(panel.teacher_combo.count() - 1)
    assert panel.teacher_file_row.isVisibleTo(panel)
    panel.teacher_file_edit.setText(str(broken))
    panel.teacher_file_edit.editingFinished.emit()
    assert panel.start_button.isEnabled()
    first = len(notification_manager.records)

    panel.start()
    qtbot.waitUntil(lambda: not panel.running, timeout=120_000)
    qtbot.wait(300)

    assert panel.job is not None
    assert panel.job.status is JobStatus.FAILED
    # the whole reason in the panel, where it wraps and can be copied ...
    status = panel.status_label.text()
    assert status.startswith("The training stopped with an error: ")
    assert "kdseg loso" not in status
    assert str(broken) in status
    assert f"The whole log: {panel.job.log_path}" in status
    assert panel.status_label.wordWrap()
    assert panel.status_label.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse
    assert panel.status_label.isVisible()
    # ... and a notification of one short line, which napari's toast shows whole
    assert errors_since(first) == ["Distillation failed: see the panel"]
    assert toast_text(errors_since(first)[0]) == errors_since(first)[0]
    assert "kdseg loso:" in panel.log_view.toPlainText()
    assert panel.start_button.isEnabled()


@pytest.mark.gui  # in the GUI process, as the module's other tests
def test_a_failure_is_told_in_a_sentence_without_the_command_or_a_traceback() -> None:
    with_line = JobOutcome(
        JobStatus.FAILED,
        2,
        "failed with exit status 2: kdseg distill: teacher.keras is not a Keras archive",
        "kdseg distill: teacher.keras is not a Keras archive",
        ("Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: boom"),
    )
    assert failure_text(with_line) == (
        "The training stopped with an error: teacher.keras is not a Keras archive"
    )
    traceback_only = JobOutcome(
        JobStatus.FAILED, 1, "failed with exit status 1: ValueError: boom", None
    )
    assert failure_text(traceback_only) == "The training stopped with an error: ValueError: boom"
    crashed = JobOutcome(
        JobStatus.CRASHED, -9, "crashed: the training process was killed by SIGKILL", None
    )
    assert (
        failure_text(crashed) == "The training crashed: the training process was killed by SIGKILL."
    )


@pytest.mark.gui  # in the GUI process, as the module's other tests
def test_where_training_runs_is_said_in_words() -> None:
    assert runs_on("cpu") == "this computer's processor"
    assert runs_on("/device:GPU:0") == "the graphics card (/device:GPU:0)"


def test_taps_is_offered_with_its_provenance_and_plans_one_distill_job(
    panel: DistillationPanel, tmp_path: Path
) -> None:
    """TAPS in the teacher list, said where it comes from; choosing it switches KMM off (it
    gives no features) and makes the run one ``kdseg distill`` of the student, with the
    folder of scans without masks as extra training data."""
    configure(panel, tmp_path / "run")
    combo = panel.teacher_combo
    index = combo.findData("taps")
    assert combo.itemText(index) == "TAPS (trained on real prostate MRI)"
    tooltip = combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    assert "trained on real prostate MRI by its authors; MIT licence" in tooltip
    assert "lavlab-taps 1.1.2" in tooltip
    assert panel.loss_checks["kernel_matrix"].isChecked()
    combo.setCurrentIndex(index)
    assert panel.taps_label.isVisible()
    assert "MIT licence" in panel.taps_label.toolTip()
    assert "Match the teacher's inner features" in panel.taps_label.text()
    assert not panel.loss_checks["kernel_matrix"].isChecked()
    # real scans of every field of view: a fixed pixel size, which did best on them
    assert panel.pixel_mm_spin.value() == 1.0
    assert "fixed 1 mm per pixel" in panel.taps_label.text()
    unlabelled = tmp_path / "dicom"
    unlabelled.mkdir()
    panel.unlabelled_edit.setText(str(unlabelled))
    panel.unlabelled_edit.editingFinished.emit()
    assert panel.start_button.isEnabled(), panel.plan_label.text()
    # TAPS in words in the plan; the package and its runtime in the tooltip
    assert (
        "the teacher is TAPS, a published prostate model trained on real MRI by its authors "
        "(licence: MIT)"
    ) in panel.plan_label.text()
    assert not re.search("PyPI|lavlab|ONNX", panel.plan_label.text())
    assert "PyPI package lavlab-taps 1.1.2, run here on ONNX Runtime" in panel.plan_label.toolTip()
    assert "and the unlabelled scans" in panel.plan_label.text()
    argv = job_argv(panel.settings())
    assert argv[3:5] == ["distill", str(panel.dataset.root)]
    assert argv[argv.index("--teacher") + 1] == "taps"
    assert argv[argv.index("--unlabelled") + 1] == str(unlabelled)
    assert argv[argv.index("--exclude") + 1] == "C"
    assert argv[argv.index("--pixel-mm") + 1] == "1"
    assert "kernel_matrix" not in argv
    # KMM switched back on is refused in words, and Start waits
    panel.loss_checks["kernel_matrix"].setChecked(True)
    assert not panel.start_button.isEnabled()
    assert "switch off “Match the teacher's inner features”" in panel.plan_label.text()
    # leaving TAPS gives the whole slice back, as the paper; a size someone chose stays
    combo.setCurrentIndex(combo.findData("unetpp"))
    assert panel.pixel_mm_spin.value() == 0
    panel.pixel_mm_spin.setValue(0.8)
    combo.setCurrentIndex(index)
    combo.setCurrentIndex(combo.findData("unetpp"))
    assert panel.pixel_mm_spin.value() == 0.8


@pytest.fixture
def teacher_file(tmp_path: Path) -> Path:
    """An untrained UNet++ teacher at the tiny run's grid, saved by a child process (this
    process must not import TensorFlow)."""
    path = tmp_path / "teacher" / "unetpp.keras"
    path.parent.mkdir()
    program = (
        "import sys; from napari_kdseg.models import build_model; "
        "build_model('unetpp', (32, 32, 3), 2, 0.125).save(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", program, str(path)], check=True, timeout=300)
    return path


@pytest.mark.slow
def test_a_teacher_file_with_unlabelled_scans_distils_one_student(
    panel: DistillationPanel,
    qtbot: Any,
    tmp_path: Path,
    teacher_file: Path,
    dicom_series: list[Path],
) -> None:
    """The single-student path the panel takes for TAPS, run here with a Keras teacher file
    (TAPS's maps would take minutes): ``kdseg distill`` with the DICOM folder as unlabelled
    scans, one curve, the student exported to the library and its card saying it saw real
    scans without masks."""
    configure(panel, tmp_path / "run")
    panel.teacher_combo.setCurrentIndex(panel.teacher_combo.count() - 1)
    panel.teacher_file_edit.setText(str(teacher_file))
    panel.teacher_file_edit.editingFinished.emit()
    panel.unlabelled_edit.setText(str(dicom_series[0].parent))
    panel.unlabelled_edit.editingFinished.emit()
    assert panel.start_button.isEnabled(), panel.plan_label.text()
    exported: list[str] = []
    panel.model_exported.connect(exported.append)
    panel.start()
    qtbot.waitUntil(lambda: not panel.running, timeout=RUN_TIMEOUT_MS)
    qtbot.wait(300)  # the last poll
    assert panel.job is not None
    assert panel.job.status is JobStatus.FINISHED, panel.job.outcome().message
    assert panel.progress_bar.value() == panel.progress_bar.maximum()
    assert [Path(path).name for path in exported] == ["enet-from-unetpp.onnx"]
    card = json.loads((tmp_path / "run" / "enet-from-unetpp" / "enet.json").read_text())
    assert card["training_data"] == [
        {"site": "A", "origin": "synthetic", "cases": 2, "labelled": 2},
        {"site": "B", "origin": "synthetic", "cases": 2, "labelled": 2},
        {"site": "prostate3t_dicom", "origin": "real", "cases": 2, "labelled": 0},
    ]
    assert card["teacher_model"]["file"] == str(teacher_file)
