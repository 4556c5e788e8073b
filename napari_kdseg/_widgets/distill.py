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
import dataclasses
import re
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSize, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QResizeEvent
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
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_kdseg._widgets.curves import TrainingCurves
from napari_kdseg._widgets.scroll import VerticalScrollArea
from napari_kdseg.architectures import STUDENTS, TEACHERS
from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.data.datasets import Dataset, discover
from napari_kdseg.distillation import terms
from napari_kdseg.jobs.child import ChildJob, JobEvent, JobOutcome, JobStatus
from napari_kdseg.jobs.plan import (
    PRESETS,
    TARGET_ROLE,
    DistillationSettings,
    dataset_root_of,
    job_argv,
    loss_words,
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
#: The pixel size a distillation from TAPS reads scans at unless told otherwise: whole slices
#: resized to the grid make the gland's size in pixels follow the field of view.
TAPS_PIXEL_MM = 1.0
#: Above the students a run saved into the model library (their files in the tooltip).
EXPORTED_HEADING = "Students saved for the Segmentation panel:"
RUNS_FOLDER = Path.home() / "kdseg-runs"
#: Each preset's name in the panel (its image size and epochs follow) and what it is for.
PRESET_NAMES = {"cpu": "Quick", "paper": "As published"}
PRESET_USES = {
    "cpu": "Runs on this computer's processor.",
    "paper": "The paper's setting; needs a graphics card.",
}
#: What each of the paper's distillation terms does, for the tooltips of its check box.
LOSS_TIPS = {
    "logits": "LM, the logits loss (eq. 7): the KL divergence between the student's and the "
    "teacher's class probabilities, pixel by pixel",
    "kernel_matrix": "KMM, kernel matrix matching: the student's inner features, mapped to "
    "the teacher's channels, should relate the scans of a batch to one another as the "
    "teacher's do. Needs the teacher's features, which TAPS does not give",
    "affinity": "AAM, the adaptive affinity loss: neighbouring pixels the teacher puts in one "
    "class should look alike to the student, and pixels it separates should differ",
}
#: Widths as people say them; others read as a fraction of the full size.
_WIDTH_WORDS = {1.0: "full-size", 0.5: "half-size", 0.25: "quarter-size"}
#: ``kdseg loso: `` before the child's own error sentence.
_COMMAND_PREFIX = re.compile(r"^kdseg [\w-]+: ")
_ERROR_COLOUR = "#ff6b6b"
_PROGRESS_STEPS = 1000


class DistillationPanel(QWidget):
    """Pick sites, a teacher and a student and the losses; train, watch, cancel, resume.

    ``model_exported`` carries the path of each student exported to ONNX into the library.
    What the panel shows is in a clinician's words; the paper's names, the command's options
    and file paths are in the tooltips and the raw log.
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
        self._pixel_mm_set_for_taps = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)

        setup = QWidget()
        setup_layout = QVBoxLayout(setup)
        setup_layout.addWidget(self._build_dataset_group())
        setup_layout.addWidget(self._build_models_group())
        setup_layout.addWidget(self._build_training_group())
        setup_layout.addWidget(self._build_advanced_section())
        setup_layout.addWidget(self._build_output_group())
        setup_layout.addWidget(self._build_plan_group())
        setup_layout.addStretch(1)
        # Both pages scroll, so the dock fits a laptop screen (1280 x 800) beside the
        # segmentation panel while Start, Cancel, the bar and the status stay in view.
        self.tabs = QTabWidget()
        self.tabs.addTab(VerticalScrollArea(setup), "Setup")
        self.tabs.addTab(VerticalScrollArea(self._build_progress_tab()), "Progress and results")
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
        self.dropped_button.clicked.connect(self._use_dropped_dataset)
        layout.addWidget(self.dropped_button)

        target_row = QFormLayout()
        self.target_combo = _combo()
        self.target_combo.setToolTip("The unseen site: every other site trains, this one scores")
        self.target_combo.currentIndexChanged.connect(self._on_target_changed)
        target_row.addRow("Target site", self.target_combo)
        layout.addLayout(target_row)

        self.sites_table = QTableWidget(0, 4)
        self.sites_table.setHorizontalHeaderLabels(["site", "role", "scans", "with masks"])
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
        self.teacher_combo = _combo()
        for name, label in TEACHERS.items():
            self.teacher_combo.addItem(label, name)
        self.teacher_combo.addItem(TAPS_ITEM, TAPS)
        self.teacher_combo.setItemData(
            self.teacher_combo.count() - 1, TAPS_PROVENANCE, Qt.ItemDataRole.ToolTipRole
        )
        self.teacher_combo.addItem(TEACHER_FILE_ITEM, None)
        self.teacher_combo.currentIndexChanged.connect(self._on_teacher_changed)
        form.addRow("Teacher", self.teacher_combo)
        self.taps_label = QLabel(
            "TAPS was trained on real prostate MRI by its authors. It gives its masks only, so "
            f"“{loss_words('kernel_matrix')}” is off. Scans are read at a fixed "
            f"{TAPS_PIXEL_MM:g} mm per pixel (Advanced), which did best on real scans."
        )
        self.taps_label.setToolTip(f"TAPS: {TAPS_PROVENANCE}. It gives no features, so KMM is off.")
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

        self.student_combo = _combo()
        for name, label in STUDENTS.items():
            self.student_combo.addItem(label, name)
        self.student_combo.currentIndexChanged.connect(self._on_models_changed)
        form.addRow("Student", self.student_combo)

        # across the whole row: the ways of learning are long to say
        losses = QGridLayout()
        losses.setContentsMargins(0, 0, 0, 0)
        losses.addWidget(QLabel("Learn from the teacher by"), 0, 0)
        losses.addWidget(QLabel("weight"), 0, 1)
        self.loss_checks: dict[str, QCheckBox] = {}
        self.lambda_spins: dict[str, QDoubleSpinBox] = {}
        for row, spec in enumerate(terms.registered(), start=1):
            check = QCheckBox(loss_words(spec.name))
            check.setToolTip(LOSS_TIPS.get(spec.name, spec.short_name))
            check.setChecked(spec.name in terms.PAPER_TERMS)  # other terms are opt-in
            check.toggled.connect(self._update_plan)
            spin = QDoubleSpinBox()
            spin.setRange(0.0, 100.0)
            spin.setDecimals(3)
            spin.setSingleStep(0.1)
            spin.setValue(spec.default_weight)
            spin.setEnabled(check.isChecked())
            spin.setToolTip(
                f"λ of {spec.short_name}: its weight in the student's loss (eq. 8, Seg + "
                "λ_LM LM + λ_KMM KMM + λ_AAM AAM)"
            )
            spin.valueChanged.connect(self._update_plan)
            check.toggled.connect(spin.setEnabled)
            losses.addWidget(check, row, 0)
            losses.addWidget(spin, row, 1)
            self.loss_checks[spec.name], self.lambda_spins[spec.name] = check, spin
        form.addRow(losses)

        self.unlabelled_edit = QLineEdit()
        self.unlabelled_edit.setPlaceholderText("optional: a folder of scans without masks")
        self.unlabelled_edit.setToolTip(
            "Scans without masks (a folder of DICOM series, say) that train the student "
            "through the distillation losses (--unlabelled); needs TAPS or a trained teacher file"
        )
        self.unlabelled_edit.editingFinished.connect(self._update_plan)
        form.addRow(
            "Scans without masks", _with_button(self.unlabelled_edit, self._choose_unlabelled)
        )
        return group

    def _build_training_group(self) -> QGroupBox:
        group = QGroupBox("Training")
        form = QFormLayout(group)
        self.preset_combo = _combo()
        for name, words in PRESET_NAMES.items():
            values = PRESETS[name]
            self.preset_combo.addItem(f"{words} ({values.size} px, {values.epochs} epochs)", name)
            self.preset_combo.setItemData(
                self.preset_combo.count() - 1, _preset_tip(name), Qt.ItemDataRole.ToolTipRole
            )
        self.preset_combo.setToolTip("Fills the fields below; change any of them afterwards")
        self.preset_combo.currentIndexChanged.connect(lambda _: self.apply_preset())
        form.addRow("Preset", self.preset_combo)
        self.epochs_spin = _spin(1, 10_000)
        self.epochs_spin.setToolTip("Passes over every training scan for the teacher (--epochs)")
        form.addRow("Epochs (teacher)", self.epochs_spin)
        self.student_epochs_spin = _spin(1, 10_000)
        self.student_epochs_spin.setToolTip(
            "Passes over every training scan for each student (--student-epochs)"
        )
        form.addRow("Epochs (students)", self.student_epochs_spin)
        self.batch_spin = _spin(1, 1024)
        self.batch_spin.setToolTip(
            "Slices per training step (--batch-size); lower it when memory runs out"
        )
        form.addRow("Slices per step", self.batch_spin)
        self.learning_rate_spin = QDoubleSpinBox()
        self.learning_rate_spin.setDecimals(6)
        self.learning_rate_spin.setRange(1e-6, 1.0)
        self.learning_rate_spin.setSingleStep(1e-4)
        self.learning_rate_spin.setToolTip("Adam's learning rate at the start (--learning-rate)")
        form.addRow("Learning rate", self.learning_rate_spin)
        self.size_spin = _spin(8, 1024)
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip(
            "Each slice is resized to a square of this many pixels before the models see it "
            "(--size)"
        )
        form.addRow("Image size", self.size_spin)
        self.width_spin = QDoubleSpinBox()
        self.width_spin.setRange(0.0, 4.0)
        self.width_spin.setSingleStep(0.25)
        self.width_spin.setDecimals(3)
        self.width_spin.setSuffix(" × full size")
        form.addRow("Model size", self.width_spin)
        for spin in (self.epochs_spin, self.student_epochs_spin, self.batch_spin, self.size_spin):
            spin.valueChanged.connect(self._update_plan)
        self.learning_rate_spin.valueChanged.connect(self._update_plan)
        self.width_spin.valueChanged.connect(self._update_plan)
        return group

    def _build_advanced_section(self) -> QWidget:
        """Options the paper does not use, behind a button that shows them (hidden at first)."""
        section = QWidget()
        layout = QVBoxLayout(section)
        layout.setContentsMargins(0, 0, 0, 0)
        self.advanced_button = QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_button.setToolTip(
            "Settings for scanners and coils the training scans do not show, and for learning "
            "from scans without masks (all off by default, as in the paper)"
        )
        self.advanced_button.toggled.connect(self._show_advanced)
        layout.addWidget(self.advanced_button)
        self.advanced_box = QGroupBox()
        form = QFormLayout(self.advanced_box)

        self.pixel_mm_spin = QDoubleSpinBox()
        self.pixel_mm_spin.setRange(0.0, 5.0)
        self.pixel_mm_spin.setDecimals(2)
        self.pixel_mm_spin.setSingleStep(0.1)
        self.pixel_mm_spin.setSuffix(" mm")
        self.pixel_mm_spin.setSpecialValueText("off: the whole slice")
        self.pixel_mm_spin.setToolTip(
            "--pixel-mm: the image is a square of image size x pixel size millimetres centred "
            "on each slice (cropped or padded), so the gland has the same size in pixels "
            "whatever the scanner's field of view. Off: the whole slice is resized, as in the "
            "paper"
        )
        form.addRow("Fixed pixel size", self.pixel_mm_spin)

        self.intensity_combo = _combo()
        self.intensity_combo.addItem("over the whole scan (as in the paper)", None)
        self.intensity_combo.addItem("even out a coil's brightness first", "local")
        self.intensity_combo.setToolTip(
            "--intensity: volume, the paper's z-score over the whole volume; local, each slice "
            "divided by its local mean (10 mm Gaussian) first, which flattens a receive coil's "
            "falloff (an endorectal coil's above all)"
        )
        form.addRow("Brightness", self.intensity_combo)

        self.augment_combo = _combo()
        self.augment_combo.addItem("standard", None)
        self.augment_combo.addItem("standard, and mimic other scanners and coils", "scanner-shift")
        self.augment_combo.setToolTip(
            "--augment: standard, flips, rotation, zoom, gamma and noise (nnU-Net's 2D "
            "defaults); scanner-shift, also coil-shaped intensity fields, blur and wider zoom "
            "and contrast, for scanners and coils the training scans do not show"
        )
        form.addRow("Training variations", self.augment_combo)

        self.teacher_labels_check = QCheckBox("Use the teacher's masks where scans have none")
        self.teacher_labels_check.setToolTip(
            "--teacher-labels: the scans without a mask train on the teacher's masks with the "
            "segmentation loss, as if drawn by hand (the hard-label baseline); the ways of "
            "learning checked above come on top (eq. 8, the teacher standing in for the "
            "missing ground truth). A teacher file then runs once per scan ahead of training "
            "(--precompute-teacher) and gives no features, so KMM is off"
        )
        self.teacher_labels_check.toggled.connect(self._on_teacher_labels_toggled)
        form.addRow(self.teacher_labels_check)

        self.logits_direction_combo = _combo()
        self.logits_direction_combo.addItem("as in the paper", None)
        self.logits_direction_combo.addItem(
            "led by the teacher (for scans without masks)", "hinton"
        )
        self.logits_direction_combo.setToolTip(
            "--logits-direction: LM's divergence. As in the paper, KL(student || teacher) (eq. "
            "7); led by the teacher, Hinton's KL(teacher || student), which keeps learning "
            "where no scan has a mask (the paper's can settle on background everywhere)"
        )
        form.addRow("Matching predictions", self.logits_direction_combo)

        self.distil_unlabelled_only_check = QCheckBox(
            "Teach only the scans without masks (where the teacher is the only guide)"
        )
        self.distil_unlabelled_only_check.setToolTip(
            "--distil-on unlabelled: the ways of learning from the teacher checked above apply "
            "to the scans without a mask only; the scans with one learn from their own mask "
            "alone. For a teacher that is good on those scans and not on the others (TAPS on "
            "real scans beside synthetic ones)"
        )
        self.distil_unlabelled_only_check.toggled.connect(self._update_plan)
        form.addRow(self.distil_unlabelled_only_check)

        self.distill_only_label = QLabel(
            "These three need a ready teacher: TAPS, or a trained teacher file with scans "
            "without masks."
        )
        self.distill_only_label.setWordWrap(True)
        form.addRow(self.distill_only_label)

        self.pixel_mm_spin.valueChanged.connect(self._update_plan)
        for combo in (self.intensity_combo, self.augment_combo, self.logits_direction_combo):
            combo.currentIndexChanged.connect(self._update_plan)
        self.advanced_box.setVisible(False)
        layout.addWidget(self.advanced_box)
        return section

    def _show_advanced(self, shown: bool) -> None:
        self.advanced_box.setVisible(shown)
        self.tabs.widget(0).updateGeometry()  # the dock may need the section's width
        arrow = Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        self.advanced_button.setArrowType(arrow)

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
        self.status_label = WholeTextLabel("idle")
        # an error is shown here whole: it wraps, and it can be selected and copied
        self.status_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        layout.addWidget(self.status_label)
        return controls

    def _build_progress_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        self.stage_label = QLabel("no run yet")
        self.stage_label.setWordWrap(True)
        layout.addWidget(self.stage_label)
        self.device_label = QLabel("Runs on: –")
        layout.addWidget(self.device_label)
        self.eta_label = QLabel("Time left: –")
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
        self.log_view = LogView(LOG_VIEW_LINES, wrap=True)
        self.log_view.setPlaceholderText("what the training process does appears here")
        self.raw_log_view = LogView(RAW_LOG_VIEW_LINES, wrap=False)
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
        self.exported_label = QLabel(f"{EXPORTED_HEADING} –")
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
        # the folder's name only: a long path would widen the dock past a laptop's screen
        self.dropped_button.setText(
            f"Use dropped folder ({root.name})" if root is not None else "Use dropped folder"
        )
        where = f" ({root})" if root is not None else ""
        self.dropped_button.setToolTip(
            f"The dataset root the newest layer was read from{where}; the field follows drops "
            "until you type or choose a folder yourself"
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
        self._follow_taps_pixel_size(teacher == TAPS)
        self._switch_off_terms_needing_features()
        self._on_models_changed()

    def _follow_taps_pixel_size(self, from_taps: bool) -> None:
        """With TAPS, real scans of every field of view: a fixed pixel size unless one is set
        (bench/README.md: Dice 0.57 against 0.30 on the real test scan); back to off when
        TAPS is left and the size is still the one set here."""
        if not self._ready:
            return
        spin = self.pixel_mm_spin
        if from_taps and spin.value() == 0:
            spin.setValue(TAPS_PIXEL_MM)
            self._pixel_mm_set_for_taps = True
        elif not from_taps and self._pixel_mm_set_for_taps:
            if spin.value() == TAPS_PIXEL_MM:
                spin.setValue(0)
            self._pixel_mm_set_for_taps = False

    def _on_teacher_labels_toggled(self, *_: Any) -> None:
        self._switch_off_terms_needing_features()
        self._update_plan()

    def _switch_off_terms_needing_features(self) -> None:
        """A teacher giving its predictions only (TAPS, or a teacher file run ahead to give
        its masks) has no features: the terms reading them go off."""
        if not self._ready or not self.settings().predictions_only:
            return
        for name, check in self.loss_checks.items():
            if terms.get(name).needs_teacher_features:
                check.setChecked(False)

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
        students, teachers = (_width_words(w) for w in (values.student_width, values.teacher_width))
        self.width_spin.setSpecialValueText("as the preset")
        self.width_spin.setToolTip(
            "Channel width multiplier of teacher and students (--width). As the preset: "
            + (
                f"{students} for both"
                if students == teachers
                else f"{students} students, {teachers} teachers"
            )
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
        settings = DistillationSettings(
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
            pixel_mm=self.pixel_mm_spin.value() or None,
            intensity=self.intensity_combo.currentData(),
            augment=self.augment_combo.currentData(),
        )
        if not settings.single_student:
            return settings  # the grid takes neither (the panel greys them out)
        return dataclasses.replace(
            settings,
            teacher_labels=self.teacher_labels_check.isChecked(),
            logits_direction=self.logits_direction_combo.currentData(),
            distil_unlabelled_only=self.distil_unlabelled_only_check.isChecked(),
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
        for widget in (
            self.teacher_labels_check,
            self.logits_direction_combo,
            self.distil_unlabelled_only_check,
        ):
            widget.setEnabled(settings.single_student)
        self.distill_only_label.setVisible(not settings.single_student)
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
        self.plan_label.setToolTip(f"TAPS: {TAPS_PROVENANCE}" if settings.from_taps else "")
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
            self._set_status("Start waits: " + "; ".join(checked.errors), error=True, plan=True)
            show_error("Distillation cannot start yet: see the panel")
            return
        # the same run folder resumes the earlier job: its trainings keep their curves
        resuming = self.job is not None and self.job.run_folder == settings.run_folder
        self.progress = LosoProgress(curves=self.progress.curves if resuming else [])
        self.job = ChildJob(job_argv(settings), settings.run_folder)
        self._shown_revision = -1
        self.results_table.setRowCount(0)
        self.exported_label.setText(f"{EXPORTED_HEADING} –")
        self.exported_label.setToolTip("")
        self.log_view.clear()
        self.raw_log_view.clear()
        self.curves.show_curves(self.progress.curves)
        self.curves.redraw_if_due(force=True)
        self.job.start()
        self.tabs.setCurrentIndex(1)
        atexit.register(self.job.cancel)
        self.destroyed.connect(self.job.cancel)
        self._set_status(
            "running: see Progress and results",
            details=f"process {self.job.pid}; log: {self.job.log_path}",
        )
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
        self.stage_label.setToolTip(progress.stage_details)
        if progress.device is not None:
            self.device_label.setText(f"Runs on: {runs_on(progress.device)}")
            self.device_label.setToolTip(f"Training device: {progress.device}")
        self.progress_bar.setValue(round(progress.fraction * _PROGRESS_STEPS))
        overall = progress.overall_eta_s()
        stage = progress.stage_eta_s
        finishing = progress.fraction >= 1
        text = "Time left: finishing" if finishing else f"Time left: {format_seconds(overall)}"
        if stage is not None and not finishing:
            text += f" (this model: {format_seconds(stage)})"
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
        exported = self.progress.exported
        if exported:
            self.exported_label.setText("\n".join([EXPORTED_HEADING, *(e.label for e in exported)]))
            self.exported_label.setToolTip("\n".join(e.path for e in exported))

    def _finish(self, job: ChildJob) -> None:
        self._timer.stop()
        atexit.unregister(job.cancel)
        self.curves.redraw_if_due(force=True)
        outcome = job.outcome()
        self.cancel_button.setEnabled(False)
        self._update_plan()
        if outcome.status is JobStatus.FINISHED:
            self.progress_bar.setValue(_PROGRESS_STEPS)
            self.eta_label.setText("Done")
            self._set_status(
                "finished: see Progress and results",
                details=f"run folder: {job.run_folder}; log: {job.log_path}",
            )
            show_info(f"Distillation finished: {len(self.progress.exported)} student(s) exported")
        elif outcome.status is JobStatus.CANCELLED:
            self._set_status("cancelled — Start resumes from the last checkpoint")
        else:
            # the whole reason in the panel, where it wraps and can be copied; the
            # notification (one line in napari) only says where to read it
            self._set_status(f"{failure_text(outcome)}\nThe whole log: {job.log_path}", error=True)
            show_error("Distillation failed: see the panel")

    def _set_status(
        self, text: str, error: bool = False, plan: bool = False, details: str = ""
    ) -> None:
        """Show ``text``, and ``details`` (the process, the files) in its tooltip; ``plan``
        marks it as about the settings, replaced once they change (a job's outcome stays until
        the settings say something new)."""
        self._status_from_plan = plan
        self.status_label.setText(text)
        self.status_label.setToolTip(details)
        self.status_label.setStyleSheet(f"color: {_ERROR_COLOUR};" if error else "")


class WholeTextLabel(QLabel):
    """A wrapping label that asks for the height of all its lines at its width.

    Under the scrolling pages nothing scrolls: a long status (an error above all) would be
    cut at the dock's bottom edge where a plain label asks for one line only.
    """

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self.setWordWrap(True)

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        return QSize(hint.width(), max(hint.height(), self.heightForWidth(self.width())))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self.updateGeometry()  # another width, another number of lines


def failure_text(outcome: JobOutcome) -> str:
    """Why a job failed or crashed, whole, in a sentence (the child's own error line without
    the command's name)."""
    if outcome.status is JobStatus.FAILED:
        # without an error line of its own, the message ends with the exception's line
        reason = outcome.error_line or outcome.message.partition(": ")[2]
        return f"The training stopped with an error: {_COMMAND_PREFIX.sub('', reason)}"
    return f"The training {outcome.message}."


def runs_on(device: str) -> str:
    """Where training runs, in words: ``cpu`` is this computer's processor, a GPU's name the
    graphics card."""
    return "this computer's processor" if device == "cpu" else f"the graphics card ({device})"


def _width_words(width: float) -> str:
    return _WIDTH_WORDS.get(width, f"{width:g} × full-size")


def _preset_tip(name: str) -> str:
    """What preset ``name`` sets, with the paper's names for the loss weights."""
    values = PRESETS[name]
    weights = ", ".join(
        f"{spec.short_name} {weight:g}"
        for spec, weight in zip(terms.registered(), values.lambdas, strict=True)
    )
    return (
        f"--preset {name}: {values.size} px, {values.epochs} epochs, batch "
        f"{values.batch_size}, learning rate {values.learning_rate:g}, "
        f"{_width_words(values.student_width)} students and "
        f"{_width_words(values.teacher_width)} teachers, loss weights {weights}. "
        f"{PRESET_USES[name]}"
    )


def _combo() -> QComboBox:
    """A combo box whose longest choice does not widen the dock (it is elided instead)."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(16)
    return combo


def _spin(low: int, high: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    return spin


class LogView(QPlainTextEdit):
    """A read-only log of at most ``lines`` lines that keeps its newest line in view while
    the panel's layout makes it shorter (a stage line growing to two lines, say), as long as
    the user has not scrolled up to read."""

    def __init__(self, lines: int, wrap: bool) -> None:
        super().__init__()
        self.setReadOnly(True)
        self.setMaximumBlockCount(lines)
        if not wrap:
            self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)

    def resizeEvent(self, event: QResizeEvent) -> None:
        bar = self.verticalScrollBar()
        following = bar.value() == bar.maximum()
        super().resizeEvent(event)
        if following:
            _scroll_to_end(self)


def _append(view: QPlainTextEdit, lines: list[str]) -> None:
    """Append ``lines`` in one edit and show the newest."""
    if lines:
        view.appendPlainText("\n".join(lines))
        _scroll_to_end(view)


def _scroll_to_end(view: QPlainTextEdit) -> None:
    bar = view.verticalScrollBar()
    bar.setValue(bar.maximum())


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
