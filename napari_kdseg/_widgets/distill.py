"""Distillation panel: train a teacher and a student leave-one-site-out, watch it, cancel it.

Thin Qt glue over :mod:`napari_kdseg.jobs`: the settings become a ``kdseg loso`` command (or,
from TAPS or with a folder of scans without masks, one ``kdseg distill``;
:mod:`napari_kdseg.jobs.plan`) run as a child process (:mod:`napari_kdseg.jobs.child`), whose
JSON-lines events a timer on the GUI thread drains into :class:`~napari_kdseg.jobs.progress.
LosoProgress` and shows. The viewer process never imports TensorFlow, stays responsive (the
GUI thread only empties a queue) and survives whatever happens to the child.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_kdseg._widgets.curves import TrainingCurves
from napari_kdseg.architectures import STUDENTS, TEACHERS
from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.data.datasets import Dataset, discover
from napari_kdseg.distillation import terms
from napari_kdseg.jobs.child import ChildJob, JobEvent, JobStatus
from napari_kdseg.jobs.plan import (
    PRESETS,
    TARGET_ROLE,
    DistillationSettings,
    dataset_root_of,
    job_argv,
    site_roles,
    validate,
)
from napari_kdseg.jobs.progress import LosoProgress, format_seconds, is_noise
from napari_kdseg.library import library_dir
from napari_kdseg.teachers import TAPS, TAPS_PROVENANCE

#: Milliseconds between two drains of the child's events.
POLL_MS = 100
#: Events handled per drain at most, so a burst never holds the GUI thread.
EVENTS_PER_POLL = 500
#: Lines kept in the panel's log view, and in its raw log (the run's job.log keeps all).
LOG_VIEW_LINES = 400
RAW_LOG_VIEW_LINES = 5000
TEACHER_FILE_ITEM = "trained teacher file…"
TAPS_ITEM = "TAPS (trained on real prostate MRI)"
RUNS_FOLDER = Path.home() / "kdseg-runs"
PRESET_LABELS = {"cpu": "CPU (small, quick)", "paper": "paper (384 px, 100 epochs)"}
_ERROR_COLOUR = "#ff6b6b"
_PROGRESS_STEPS = 1000


class DistillationPanel(QWidget):
    """Pick sites, a teacher and a student and the losses; train, watch, cancel, resume.

    ``model_exported`` carries the path of each student exported to ONNX into the library.
    """

    model_exported = Signal(str)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.dataset: Dataset | None = None
        self.job: ChildJob | None = None
        self.progress = LosoProgress()
        self._shown_revision = -1
        self._run_folder_edited = False
        self._dataset_typed = False  # the user's own dataset path: drops no longer replace it
        self._status_from_plan = False
        self._ready = False  # handlers wait until every widget exists
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)

        setup = QWidget()
        setup_layout = QVBoxLayout(setup)
        setup_layout.addWidget(self._build_dataset_group())
        setup_layout.addWidget(self._build_models_group())
        setup_layout.addWidget(self._build_training_group())
        setup_layout.addWidget(self._build_output_group())
        setup_layout.addWidget(self._build_plan_group())
        setup_layout.addStretch(1)
        # Both pages scroll, so the dock fits a laptop screen (1280 x 800) beside the
        # segmentation panel while Start, Cancel, the bar and the status stay in view.
        self.tabs = QTabWidget()
        self.tabs.addTab(_scrolling(setup), "Setup")
        self.tabs.addTab(_scrolling(self._build_progress_tab()), "Progress and results")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.tabs, 1)
        outer.addWidget(self._build_controls())

        self.viewer.layers.events.inserted.connect(self._offer_dropped_dataset)
        self._ready = True
        self.apply_preset()
        self._offer_dropped_dataset()
        self._on_target_changed()

    # ------------------------------------------------------------------ building the UI

    def _build_dataset_group(self) -> QGroupBox:
        group = QGroupBox("Dataset (one folder per site)")
        layout = QVBoxLayout(group)
        row = QHBoxLayout()
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("dataset root holding one folder per site")
        self.dataset_edit.textEdited.connect(self._on_dataset_typed)
        self.dataset_edit.editingFinished.connect(
            lambda: self.set_dataset(self.dataset_edit.text())
        )
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose_dataset)
        row.addWidget(self.dataset_edit, 1)
        row.addWidget(choose)
        layout.addLayout(row)
        self.dropped_button = QPushButton("Use dropped folder")
        self.dropped_button.setToolTip(
            "The dataset root the newest layer was read from (the field follows drops until "
            "you type or choose a folder yourself)"
        )
        self.dropped_button.clicked.connect(self._use_dropped_dataset)
        layout.addWidget(self.dropped_button)

        target_row = QFormLayout()
        self.target_combo = QComboBox()
        self.target_combo.setToolTip("The unseen site: every other site trains, this one scores")
        self.target_combo.currentIndexChanged.connect(self._on_target_changed)
        target_row.addRow("Target site", self.target_combo)
        layout.addLayout(target_row)

        self.sites_table = QTableWidget(0, 4)
        self.sites_table.setHorizontalHeaderLabels(["site", "role", "cases", "labelled"])
        header = self.sites_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.sites_table.verticalHeader().setVisible(False)
        self.sites_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        layout.addWidget(self.sites_table)

        self.problems_label = QLabel("Problems")
        layout.addWidget(self.problems_label)
        self.problems_list = QListWidget()
        self.problems_list.setMaximumHeight(80)
        layout.addWidget(self.problems_list)
        return group

    def _build_models_group(self) -> QGroupBox:
        group = QGroupBox("Teacher, student and losses")
        form = QFormLayout(group)
        self.teacher_combo = QComboBox()
        for name, label in TEACHERS.items():
            self.teacher_combo.addItem(label, name)
        self.teacher_combo.addItem(TAPS_ITEM, TAPS)
        self.teacher_combo.setItemData(
            self.teacher_combo.count() - 1, TAPS_PROVENANCE, Qt.ItemDataRole.ToolTipRole
        )
        self.teacher_combo.addItem(TEACHER_FILE_ITEM, None)
        self.teacher_combo.currentIndexChanged.connect(self._on_teacher_changed)
        form.addRow("Teacher", self.teacher_combo)
        self.taps_label = QLabel(f"TAPS: {TAPS_PROVENANCE}. It gives no features, so KMM is off.")
        self.taps_label.setWordWrap(True)
        self.taps_label.setVisible(False)
        form.addRow("", self.taps_label)
        self.teacher_file_edit = QLineEdit()
        self.teacher_file_edit.setPlaceholderText("teacher.keras trained without the target site")
        self.teacher_file_edit.editingFinished.connect(self._update_plan)
        teacher_file_button = QPushButton("Choose…")
        teacher_file_button.clicked.connect(self._choose_teacher_file)
        self.teacher_file_row = QWidget()
        teacher_file_layout = QHBoxLayout(self.teacher_file_row)
        teacher_file_layout.setContentsMargins(0, 0, 0, 0)
        teacher_file_layout.addWidget(self.teacher_file_edit, 1)
        teacher_file_layout.addWidget(teacher_file_button)
        self.teacher_file_row.setVisible(False)
        form.addRow("", self.teacher_file_row)

        self.student_combo = QComboBox()
        for name, label in STUDENTS.items():
            self.student_combo.addItem(label, name)
        self.student_combo.currentIndexChanged.connect(self._on_models_changed)
        form.addRow("Student", self.student_combo)

        losses = QGridLayout()
        self.loss_checks: dict[str, QCheckBox] = {}
        self.lambda_spins: dict[str, QDoubleSpinBox] = {}
        for row, spec in enumerate(terms.registered()):
            check = QCheckBox(spec.short_name)
            check.setChecked(spec.name in terms.PAPER_TERMS)  # other terms are opt-in
            check.toggled.connect(self._update_plan)
            spin = QDoubleSpinBox()
            spin.setRange(0.0, 100.0)
            spin.setDecimals(3)
            spin.setSingleStep(0.1)
            spin.setValue(spec.default_weight)
            spin.setEnabled(check.isChecked())
            spin.setPrefix("λ = ")
            spin.valueChanged.connect(self._update_plan)
            check.toggled.connect(spin.setEnabled)
            losses.addWidget(check, row, 0)
            losses.addWidget(spin, row, 1)
            self.loss_checks[spec.name], self.lambda_spins[spec.name] = check, spin
        form.addRow("Losses", losses)

        self.unlabelled_edit = QLineEdit()
        self.unlabelled_edit.setPlaceholderText("optional: a folder of scans without masks")
        self.unlabelled_edit.setToolTip(
            "Scans without masks (a folder of DICOM series, say) that train the student "
            "through the distillation losses; needs TAPS or a trained teacher file"
        )
        self.unlabelled_edit.editingFinished.connect(self._update_plan)
        form.addRow("Unlabelled scans", _with_button(self.unlabelled_edit, self._choose_unlabelled))
        return group

    def _build_training_group(self) -> QGroupBox:
        group = QGroupBox("Training")
        form = QFormLayout(group)
        self.preset_combo = QComboBox()
        for name, label in PRESET_LABELS.items():
            self.preset_combo.addItem(label, name)
        self.preset_combo.currentIndexChanged.connect(lambda _: self.apply_preset())
        form.addRow("Preset", self.preset_combo)
        self.epochs_spin = _spin(1, 10_000)
        form.addRow("Epochs (teacher)", self.epochs_spin)
        self.student_epochs_spin = _spin(1, 10_000)
        form.addRow("Epochs (students)", self.student_epochs_spin)
        self.batch_spin = _spin(1, 1024)
        form.addRow("Batch size", self.batch_spin)
        self.learning_rate_spin = QDoubleSpinBox()
        self.learning_rate_spin.setDecimals(6)
        self.learning_rate_spin.setRange(1e-6, 1.0)
        self.learning_rate_spin.setSingleStep(1e-4)
        form.addRow("Learning rate", self.learning_rate_spin)
        self.size_spin = _spin(8, 1024)
        self.size_spin.setSuffix(" px")
        form.addRow("Input size", self.size_spin)
        self.width_spin = QDoubleSpinBox()
        self.width_spin.setRange(0.0, 4.0)
        self.width_spin.setSingleStep(0.25)
        self.width_spin.setDecimals(3)
        form.addRow("Width", self.width_spin)
        for spin in (self.epochs_spin, self.student_epochs_spin, self.batch_spin, self.size_spin):
            spin.valueChanged.connect(self._update_plan)
        self.learning_rate_spin.valueChanged.connect(self._update_plan)
        self.width_spin.valueChanged.connect(self._update_plan)
        return group

    def _build_output_group(self) -> QGroupBox:
        group = QGroupBox("Output")
        form = QFormLayout(group)
        self.run_folder_edit = QLineEdit()
        self.run_folder_edit.setToolTip(
            "The run's folder: models, checkpoints, results and job.log. Start with the same "
            "folder resumes an interrupted run."
        )
        self.run_folder_edit.textEdited.connect(self._on_run_folder_edited)
        form.addRow("Run folder", _with_button(self.run_folder_edit, self._choose_run_folder))
        self.library_edit = QLineEdit(str(library_dir(create=False)))
        self.library_edit.setToolTip("Trained students are exported here as ONNX")
        self.library_edit.editingFinished.connect(self._update_plan)
        form.addRow("Model library", _with_button(self.library_edit, self._choose_library))
        return group

    def _build_plan_group(self) -> QGroupBox:
        group = QGroupBox("What Start will do")
        layout = QVBoxLayout(group)
        self.plan_label = QLabel()
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.plan_label)
        return group

    def _build_controls(self) -> QWidget:
        """Always visible under the tabs: Start and Cancel, the progress bar, the status."""
        controls = QWidget()
        layout = QVBoxLayout(controls)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Train; with the same run folder, resume an earlier run")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop at the next step; the checkpoint is kept")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, _PROGRESS_STEPS)
        self.progress_bar.setFormat("%p%")
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("idle")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        return controls

    def _build_progress_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        self.stage_label = QLabel("no run yet")
        self.stage_label.setWordWrap(True)
        layout.addWidget(self.stage_label)
        self.device_label = QLabel("device: –")
        layout.addWidget(self.device_label)
        self.eta_label = QLabel("ETA: –")
        layout.addWidget(self.eta_label)
        self.curves = TrainingCurves()
        layout.addWidget(self.curves)
        log_header = QHBoxLayout()
        log_header.addWidget(QLabel("What the training process did"), 1)
        self.raw_log_button = QPushButton("Show raw log")
        self.raw_log_button.setCheckable(True)
        self.raw_log_button.setToolTip(
            "Everything the training process printed, JSON events and TensorFlow's messages "
            "included (the run folder's job.log keeps all of it)"
        )
        self.raw_log_button.toggled.connect(self._show_raw_log)
        log_header.addWidget(self.raw_log_button)
        layout.addLayout(log_header)
        self.log_view = _log_view(LOG_VIEW_LINES, wrap=True)
        self.log_view.setPlaceholderText("what the training process does appears here")
        self.raw_log_view = _log_view(RAW_LOG_VIEW_LINES, wrap=False)
        self.log_views = QStackedWidget()
        self.log_views.addWidget(self.log_view)
        self.log_views.addWidget(self.raw_log_view)
        self.log_views.setMinimumHeight(90)
        layout.addWidget(self.log_views, 1)
        layout.addWidget(QLabel("Results on the target site"))
        self.results_table = QTableWidget(0, 3)
        self.results_table.setHorizontalHeaderLabels(["model", "variant", "Dice (mean ± std)"])
        header = self.results_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.results_table.verticalHeader().setVisible(False)
        self.results_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.results_table.setMaximumHeight(130)
        layout.addWidget(self.results_table)
        self.exported_label = QLabel("Exported students: –")
        self.exported_label.setWordWrap(True)
        self.exported_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.exported_label)
        return tab

    # ------------------------------------------------------------------ dataset

    def set_dataset(self, path: str | Path | None) -> None:
        """Discover the sites under ``path`` and fill the target combo and site table."""
        text = str(path or "").strip()
        if self.dataset_edit.text() != text:
            self.dataset_edit.setText(text)
        self.problems_list.clear()
        self.dataset = None
        if text:
            try:
                self.dataset = discover(Path(text).expanduser())
            except KdsegDataError as error:
                self.problems_list.addItem(f"[error] {error}")
        previous = self.target_combo.currentText()
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        if self.dataset is not None:
            self.target_combo.addItems(self.dataset.site_names)
            if previous in self.dataset.site_names:
                self.target_combo.setCurrentText(previous)
            for problem in self.dataset.problems:
                self.problems_list.addItem(str(problem))
        self.target_combo.blockSignals(False)
        count = self.problems_list.count()
        self.problems_list.setVisible(count > 0)
        self.problems_label.setText(
            f"Problems ({count})" if count else "Problems: none found in the file names"
        )
        self._show_dropped_button(self.dropped_dataset_root())
        self._on_target_changed()

    def _offer_dropped_dataset(self, *_: Any) -> None:
        """Follow the newest dropped dataset, unless the user gave their own path since."""
        root = self.dropped_dataset_root()
        if root is not None and (not self._dataset_typed or not self.dataset_edit.text().strip()):
            self._dataset_typed = False
            if self.dataset is None or self.dataset.root != root:
                self.set_dataset(root)
        self._show_dropped_button(root)

    def _show_dropped_button(self, root: Path | None) -> None:
        """Offer the dropped folder while the field holds another."""
        current = self.dataset.root if self.dataset is not None else None
        self.dropped_button.setEnabled(root is not None and root != current)
        self.dropped_button.setText(
            f"Use dropped folder ({root})" if root is not None else "Use dropped folder"
        )

    def dropped_dataset_root(self) -> Path | None:
        """The dataset root behind the newest layer read by this plugin, if any."""
        for layer in reversed(self.viewer.layers):
            source = (layer.metadata.get("kdseg") or {}).get("source")
            if source:
                return dataset_root_of([source])
        return None

    def _use_dropped_dataset(self) -> None:
        root = self.dropped_dataset_root()
        if root is not None:
            self._dataset_typed = False
            self.set_dataset(root)

    def _on_dataset_typed(self, _text: str) -> None:
        self._dataset_typed = True

    def _choose_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset root", self.dataset_edit.text())
        if folder:
            self._dataset_typed = True
            self.set_dataset(folder)

    def _on_target_changed(self, *_: Any) -> None:
        target = self.target_combo.currentText() or None
        rows = site_roles(self.dataset, target) if self.dataset is not None else []
        self.sites_table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            values = (row.site, row.role, str(row.cases), str(row.labelled))
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                if row.role == TARGET_ROLE:
                    item.setForeground(QColor("#ffb347"))
                self.sites_table.setItem(index, column, item)
        self._fit_sites_table()
        self._on_models_changed()

    def _fit_sites_table(self) -> None:
        """Tall enough for every site (the benchmark has six), so none hides in a scroll."""
        table = self.sites_table
        rows = max(1, table.rowCount())
        row_height = table.verticalHeader().defaultSectionSize()
        header_height = table.horizontalHeader().sizeHint().height()
        table.setFixedHeight(header_height + rows * row_height + 2 * table.frameWidth() + 2)

    # ------------------------------------------------------------------ settings

    def _on_teacher_changed(self, *_: Any) -> None:
        teacher = self.teacher_combo.currentData()
        self.teacher_file_row.setVisible(teacher is None)
        self.taps_label.setVisible(teacher == TAPS)
        if teacher == TAPS:  # TAPS gives no features: the terms reading them go off
            for name, check in self.loss_checks.items():
                if terms.get(name).needs_teacher_features:
                    check.setChecked(False)
        self._on_models_changed()

    def _on_models_changed(self, *_: Any) -> None:
        if not self._ready:
            return
        if not self._run_folder_edited:
            self.run_folder_edit.setText(str(self._default_run_folder()))
        self._update_plan()

    def _on_run_folder_edited(self, _text: str) -> None:
        self._run_folder_edited = True
        self._refresh_plan(move_run_folder=False)  # the user's folder, even one in use

    def _default_run_folder(self) -> Path:
        """``~/kdseg-runs/<dataset>-unseen-<target>-<student>-from-<teacher>``."""
        dataset = self.dataset.root.name if self.dataset is not None else "dataset"
        teacher = self.teacher_combo.currentData() or "teacher-file"
        target = self.target_combo.currentText() or "target"
        student = self.student_combo.currentData()
        return RUNS_FOLDER / f"{dataset}-unseen-{target}-{student}-from-{teacher}"

    def apply_preset(self) -> None:
        """Fill the training fields with the chosen preset's values."""
        values = PRESETS[self.preset_combo.currentData()]
        self.epochs_spin.setValue(values.epochs)
        self.student_epochs_spin.setValue(values.epochs)
        self.batch_spin.setValue(values.batch_size)
        self.learning_rate_spin.setValue(values.learning_rate)
        self.size_spin.setValue(values.size)
        self.width_spin.setSpecialValueText(
            f"preset (students {values.student_width:g}, teachers {values.teacher_width:g})"
        )
        self.width_spin.setValue(0.0)
        for spin, weight in zip(self.lambda_spins.values(), values.lambdas, strict=True):
            spin.setValue(weight)

    def settings(self) -> DistillationSettings:
        """The form as :class:`DistillationSettings`."""
        teacher = self.teacher_combo.currentData()
        teacher_file = self.teacher_file_edit.text().strip()
        library = self.library_edit.text().strip()
        unlabelled = self.unlabelled_edit.text().strip()
        return DistillationSettings(
            dataset=self.dataset.root if self.dataset is not None else Path(),
            target=self.target_combo.currentText(),
            run_folder=Path(self.run_folder_edit.text().strip()).expanduser(),
            teacher=teacher or "unetpp",
            teacher_file=Path(teacher_file).expanduser() if teacher is None else None,
            student=self.student_combo.currentData(),
            losses=tuple(name for name, check in self.loss_checks.items() if check.isChecked()),
            lambdas=tuple(spin.value() for spin in self.lambda_spins.values()),
            preset=self.preset_combo.currentData(),
            epochs=self.epochs_spin.value(),
            student_epochs=self.student_epochs_spin.value(),
            batch_size=self.batch_spin.value(),
            learning_rate=self.learning_rate_spin.value(),
            size=self.size_spin.value(),
            width=self.width_spin.value() or None,
            library=Path(library).expanduser() if library else None,
            unlabelled=(Path(unlabelled).expanduser(),) if unlabelled else (),
        )

    def _update_plan(self, *_: Any) -> None:
        self._refresh_plan(move_run_folder=True)

    def _refresh_plan(self, move_run_folder: bool) -> None:
        """Validate the form, show what Start will do and enable it.

        With ``move_run_folder`` (a setting changed, not the run folder typed), a run folder
        holding a run made with other settings gives way to a free folder beside it, and the
        status says so: the earlier run stays as it was, the new one goes next to it.
        """
        if not self._ready:
            return
        settings = self.settings()
        checked = validate(settings, self.dataset)
        moved = ""
        if move_run_folder and not self.running and checked.free_run_folder is not None:
            moved = (
                f"The earlier run in {settings.run_folder} used other settings "
                f"({', '.join(checked.other_settings)}); it stays as it is, and this run goes "
                f"to {checked.free_run_folder}."
            )
            self.run_folder_edit.setText(str(checked.free_run_folder))
            checked = validate(self.settings(), self.dataset)
        lines = [
            f"<span style='color:{_ERROR_COLOUR}'>✗ {error}</span>" for error in checked.errors
        ]
        lines += [f"• {note}" for note in checked.notes]
        self.plan_label.setText("<br>".join(lines) or "ready")
        self.start_button.setEnabled(checked.ok and not self.running)
        if self.running:
            return
        if checked.errors:
            more = len(checked.errors) - 1
            also = f" (and {more} more below, under What Start will do)" if more else ""
            self._set_status(f"Start waits: {checked.errors[0]}{also}", error=True, plan=True)
        elif moved:
            self._set_status(moved, plan=True)
        elif self._status_from_plan:
            self._set_status("ready to start", plan=True)

    def _choose_teacher_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Trained teacher", "", "Keras model (*.keras)")
        if path:
            self.teacher_file_edit.setText(path)
            self._update_plan()

    def _choose_unlabelled(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Scans without masks", self.unlabelled_edit.text()
        )
        if folder:
            self.unlabelled_edit.setText(folder)
            self._update_plan()

    def _choose_run_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run folder", self.run_folder_edit.text())
        if folder:
            self.run_folder_edit.setText(folder)
            self._on_run_folder_edited(folder)

    def _choose_library(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model library", self.library_edit.text())
        if folder:
            self.library_edit.setText(folder)
            self._update_plan()

    # ------------------------------------------------------------------ the job

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.status.final

    def start(self) -> None:
        """Launch ``kdseg loso`` for the form's settings (resuming the run folder's run)."""
        if self.running:
            return
        settings = self.settings()
        checked = validate(settings, self.dataset)
        if not checked.ok:
            show_error("Cannot start: " + "; ".join(checked.errors))
            return
        # the same run folder resumes the earlier job: its trainings keep their curves
        resuming = self.job is not None and self.job.run_folder == settings.run_folder
        self.progress = LosoProgress(curves=self.progress.curves if resuming else [])
        self.job = ChildJob(job_argv(settings), settings.run_folder)
        self._shown_revision = -1
        self.results_table.setRowCount(0)
        self.exported_label.setText("Exported students: –")
        self.log_view.clear()
        self.raw_log_view.clear()
        self.curves.show_curves(self.progress.curves)
        self.curves.redraw_if_due(force=True)
        self.job.start()
        self.tabs.setCurrentIndex(1)
        atexit.register(self.job.cancel)
        self.destroyed.connect(self.job.cancel)
        self._set_status(f"running (process {self.job.pid}); log: {self.job.log_path}")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._timer.start()

    def cancel(self) -> None:
        """Ask the child to stop at the next step boundary; its checkpoint is kept."""
        if self.running and self.job is not None:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self._set_status("cancelling: the training stops after its current step…")

    def poll(self) -> None:
        """Drain the child's events and show them (the timer's slot; never blocks)."""
        if self.job is None:
            return
        events = self.job.drain(EVENTS_PER_POLL)
        if events:
            self._take(events)
        self.curves.redraw_if_due()
        if self.job.status.final and not events:
            self._finish(self.job)

    def _take(self, events: list[JobEvent]) -> None:
        """Fold ``events`` into the progress; the log shows them as sentences, the raw log
        as printed."""
        sentences: list[str] = []
        for event in events:
            if event.is_log:
                # after the report event the command prints the report for terminals; the
                # results table shows it here
                report_text = bool(self.progress.report) and event.stream == "stdout"
                if not (report_text or is_noise(event.line)):
                    sentences.append(event.line)
                continue
            sentence = self.progress.apply(event.name, event.fields)
            if sentence:
                sentences.append(sentence)
            if event.name == "exported":
                self.model_exported.emit(str(event.fields.get("path")))
        _append(self.raw_log_view, [event.line for event in events])
        _append(self.log_view, sentences)
        if self.progress.revision != self._shown_revision:
            self._shown_revision = self.progress.revision
            self._show_progress()

    def _show_raw_log(self, raw: bool) -> None:
        self.log_views.setCurrentWidget(self.raw_log_view if raw else self.log_view)
        self.raw_log_button.setText("Show plain log" if raw else "Show raw log")
        _scroll_to_end(self.raw_log_view if raw else self.log_view)

    def _show_progress(self) -> None:
        progress = self.progress
        self.stage_label.setText(progress.stage)
        if progress.device is not None:
            self.device_label.setText(f"device: {progress.device}")
        self.progress_bar.setValue(round(progress.fraction * _PROGRESS_STEPS))
        overall = progress.overall_eta_s()
        stage = progress.stage_eta_s
        text = f"ETA: {format_seconds(overall)}" if progress.fraction < 1 else "ETA: finishing"
        if stage is not None and progress.fraction < 1:
            text += f" (this training: {format_seconds(stage)})"
        self.eta_label.setText(text)
        self.curves.show_curves(progress.curves)
        self._show_results()

    def _show_results(self) -> None:
        scores = self.progress.scores
        target = scores[-1].target if scores else ""
        self.results_table.setHorizontalHeaderLabels(
            ["model", "variant", f"Dice on {target} (mean ± std)" if target else "Dice"]
        )
        self.results_table.setRowCount(len(scores))
        for row, score in enumerate(scores):
            cases = f" (n={score.cases}, {score.undefined} undefined)" if score.undefined else ""
            for column, text in enumerate(
                (score.model_name, score.variant_text, score.dice_text + cases)
            ):
                item = QTableWidgetItem(text)
                item.setToolTip(f"the paper's Table 2 calls this row {score.paper_variant}")
                self.results_table.setItem(row, column, item)
        if self.progress.exported:
            self.exported_label.setText("Exported students:\n" + "\n".join(self.progress.exported))

    def _finish(self, job: ChildJob) -> None:
        self._timer.stop()
        atexit.unregister(job.cancel)
        self.curves.redraw_if_due(force=True)
        outcome = job.outcome()
        self.cancel_button.setEnabled(False)
        self._update_plan()
        if outcome.status is JobStatus.FINISHED:
            self.progress_bar.setValue(_PROGRESS_STEPS)
            self.eta_label.setText("ETA: done")
            self._set_status(f"finished: results in {job.run_folder}")
            show_info(f"Distillation finished: {len(self.progress.exported)} student(s) exported")
        elif outcome.status is JobStatus.CANCELLED:
            self._set_status("cancelled — Start resumes from the last checkpoint")
        else:
            tail = "\n".join(outcome.log_tail[-8:])
            self._set_status(f"{outcome.message}\nlog: {job.log_path}", error=True)
            show_error(f"Distillation {outcome.message}\n{tail}")

    def _set_status(self, text: str, error: bool = False, plan: bool = False) -> None:
        """Show ``text``; ``plan`` marks it as about the settings, replaced once they change
        (a job's outcome stays until the settings say something new)."""
        self._status_from_plan = plan
        self.status_label.setText(text)
        self.status_label.setStyleSheet(f"color: {_ERROR_COLOUR};" if error else "")


def _spin(low: int, high: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    return spin


def _log_view(lines: int, wrap: bool) -> QPlainTextEdit:
    view = QPlainTextEdit()
    view.setReadOnly(True)
    view.setMaximumBlockCount(lines)
    if not wrap:
        view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
    return view


def _append(view: QPlainTextEdit, lines: list[str]) -> None:
    """Append ``lines`` in one edit and show the newest."""
    if lines:
        view.appendPlainText("\n".join(lines))
        _scroll_to_end(view)


def _scroll_to_end(view: QPlainTextEdit) -> None:
    bar = view.verticalScrollBar()
    bar.setValue(bar.maximum())


def _scrolling(page: QWidget) -> QScrollArea:
    """``page`` in a vertical scroll area: its height no longer sets the dock's minimum."""
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(page)
    return scroll


def _with_button(edit: QLineEdit, choose: Any) -> QWidget:
    """A line edit with a "Choose…" button calling ``choose``."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    button = QPushButton("Choose…")
    button.clicked.connect(choose)
    layout.addWidget(button)
    return row
