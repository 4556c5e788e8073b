"""The distillation panel in a real viewer, driving real ``kdseg loso`` child processes.

The jobs are tiny (three phantom sites of two 32 x 32 cases, one epoch each, quarter width)
but real: TensorFlow trains in the child, never in this process. Each test checks what a user
sees: results and curves after a run, a clean cancel, the child's error after a failure, and
a viewer that keeps answering while the child trains.
"""

from __future__ import annotations

import json
import os
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

from napari_kdseg._widgets.distill import DistillationPanel
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.jobs.child import JobStatus

SHOTS = Path("/tmp/shots_distill")
#: A whole run (three trainings, scoring, two ONNX exports) took 2 min 10 s on 2 busy cores.
RUN_TIMEOUT_MS = 420_000
HEARTBEAT_MS = 20
#: The GUI thread's own work between two heartbeat ticks stays under this.
MAX_GUI_WORK_S = 0.2
#: Wall-clock bound on a gap: the two cores are shared with the child and other processes.
MAX_WALL_GAP_S = 1.0


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
    assert panel.device_label.text() == "device: cpu"
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
    assert "cell 1/3: UNet++ (teacher) on target C" in mid_stage
    assert panel.status_label.text().startswith("finished")
    rows = [
        [panel.results_table.item(row, column).text() for column in range(3)]
        for row in range(panel.results_table.rowCount())
    ]
    assert [row[:2] for row in rows] == [
        ["UNet++", "teacher"],
        ["ENet", "w/o"],
        ["ENet", "w/ +AAM + KMM + LM"],
    ]
    assert all(" ± " in row[2] for row in rows)
    assert "Dice on C" in panel.results_table.horizontalHeaderItem(2).text()
    loss_points, dice_points = panel.curves.points
    assert loss_points >= 3
    assert dice_points == 3
    assert [Path(path).name for path in exported] == [
        "enet-unseen-C.onnx",
        "enet-from-unetpp-AAM-KMM-LM-unseen-C.onnx",
    ]
    assert all(Path(path).is_file() and path in panel.exported_label.text() for path in exported)
    assert (tmp_path / "run" / "results.csv").is_file()
    assert "ended: exit status 0" in (tmp_path / "run" / "job.log").read_text()
    assert panel.progress_bar.value() == panel.progress_bar.maximum()
    assert panel.start_button.isEnabled()
    # the GUI thread only drains a queue and redraws the curves: the viewer never froze
    assert heartbeat.max_work() < MAX_GUI_WORK_S, heartbeat.longest()
    assert heartbeat.max_gap() < MAX_WALL_GAP_S, heartbeat.longest()


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
    status = panel.status_label.text()
    assert status.startswith("failed with exit status 2: kdseg loso: ")
    assert str(broken) in status
    assert "job.log" in status
    assert any("kdseg loso:" in message for message in errors_since(first))
    assert "kdseg loso:" in panel.log_view.toPlainText()
    assert panel.start_button.isEnabled()


def test_taps_is_offered_with_its_provenance_and_plans_one_distill_job(
    panel: DistillationPanel, tmp_path: Path
) -> None:
    """TAPS in the teacher list, said where it comes from; choosing it switches KMM off (it
    gives no features) and makes the run one ``kdseg distill`` of the student, with the
    folder of scans without masks as extra training data."""
    from napari_kdseg.jobs.plan import job_argv

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
    assert "MIT licence" in panel.taps_label.text()
    assert not panel.loss_checks["kernel_matrix"].isChecked()
    unlabelled = tmp_path / "dicom"
    unlabelled.mkdir()
    panel.unlabelled_edit.setText(str(unlabelled))
    panel.unlabelled_edit.editingFinished.emit()
    assert panel.start_button.isEnabled(), panel.plan_label.text()
    assert "the teacher is TAPS" in panel.plan_label.text()
    assert "and the unlabelled scans" in panel.plan_label.text()
    argv = job_argv(panel.settings())
    assert argv[3:5] == ["distill", str(panel.dataset.root)]
    assert argv[argv.index("--teacher") + 1] == "taps"
    assert argv[argv.index("--unlabelled") + 1] == str(unlabelled)
    assert argv[argv.index("--exclude") + 1] == "C"
    assert "kernel_matrix" not in argv
    # KMM switched back on is refused in words, and Start waits
    panel.loss_checks["kernel_matrix"].setChecked(True)
    assert not panel.start_button.isEnabled()
    assert "switch KMM off" in panel.plan_label.text()


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
