"""Segmentation panel: segment a scan with an exported ONNX student and compare with the truth.

Thin Qt glue over Qt-free code: models come from :mod:`napari_kdseg.library`, inference from
:mod:`napari_kdseg.inference` (ONNX Runtime), scores from
:mod:`napari_kdseg.evaluation.slices`, saving from :mod:`napari_kdseg._writer`. Inference and
scoring run in napari thread workers so the viewer stays responsive; a failure is shown whole
in the panel (a short napari notification points there) and never takes the viewer down.
Never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QColor, QResizeEvent
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_kdseg._widgets.scroll import VerticalScrollArea
from napari_kdseg._writer import affine_from_scale, write_labels
from napari_kdseg.card import SYNTHETIC_ONLY_WARNING
from napari_kdseg.data.layout import case_stem
from napari_kdseg.data.volume import Volume
from napari_kdseg.evaluation.slices import (
    SLICE_COLUMNS,
    SliceScores,
    VolumeComparison,
    compare_volumes,
    worst_first,
)
from napari_kdseg.inference.model import SegmentationModel
from napari_kdseg.inference.quality import CHECK, OK, UNRELIABLE, QualityReport
from napari_kdseg.library import LibraryModel, describe_model, library_dir, list_models

#: Colours of the comparison contours, as in the paper's Figure 3: pure red and green.
TRUTH_COLOUR = "#ff0000"
PREDICTION_COLOUR = "#00ff00"
_COLOUR_NAMES = {TRUTH_COLOUR: "red", PREDICTION_COLOUR: "green"}
CONTOUR_PIXELS = 2
PREDICTION_SUFFIX = " prediction"
_SORT_ROLE = Qt.ItemDataRole.UserRole
_ERROR_COLOUR = "#ff6b6b"
#: Each warning of a segmentation (told whole in the panel) as napari's toast shows it: a
#: few words that fit its one line.
WARNING_TOASTS = {SYNTHETIC_ONLY_WARNING: "Not reliable on a real scan: see the panel"}


# --------------------------------------------------------------------------- Qt-free helpers


@dataclass
class SegmentationOutcome:
    """What a segmentation run produced, for the panel to show."""

    labels: npt.NDArray[np.uint8]
    seconds: dict[str, float] = field(default_factory=dict)
    runtime: str = ""
    model: SegmentationModel | None = None
    #: sentences the user must read beside the result (a model meeting scans unlike its own)
    warnings: list[str] = field(default_factory=list)
    #: how far to trust the result (verdict, reasons, per-slice uncertainty)
    quality: QualityReport | None = None


def volume_from_layer(layer: Layer) -> Volume:
    """The scan behind an image layer: its voxels and the affine the reader stored with it.

    A layer without stored geometry (drawn or opened by another plugin) gets an affine built
    from its ``scale`` and ``translate``.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    array = np.asarray(data, dtype=np.float32)
    geometry = layer.metadata.get("kdseg") or {}
    stored_shape = geometry.get("shape")
    if stored_shape is not None and tuple(stored_shape) != array.shape:
        raise ValueError(
            f"layer {layer.name!r} holds {array.shape} voxels but its scan had "
            f"{tuple(stored_shape)}; it was changed after reading and has no geometry to use"
        )
    if geometry.get("affine") is not None:
        affine = np.asarray(geometry["affine"], dtype=np.float64)
    else:
        affine = affine_from_scale(layer.scale, layer.translate, array.ndim)
    source = geometry.get("source") or None
    # The reader's format travels too: it tells a phantom case made in memory from a scan.
    metadata = {"format": geometry["format"]} if geometry.get("format") else {}
    return Volume(
        array=array, affine=affine, source=Path(source) if source else None, metadata=metadata
    )


def segment_layer_volume(
    model_path: Path,
    scan: Volume,
    tta: bool = False,
    model: SegmentationModel | None = None,
) -> SegmentationOutcome:
    """Load the ONNX model (unless given) and segment ``scan``; runs in a worker thread."""
    from napari_kdseg.inference.onnx_runtime import load_onnx
    from napari_kdseg.inference.segment import scan_warnings, segment

    seconds: dict[str, float] = {}
    if model is None:
        started = time.perf_counter()
        model = load_onnx(model_path, threads=inference_threads())
        seconds["load model"] = time.perf_counter() - started
    result = segment(scan, model, tta=tta)
    warnings = scan_warnings(model.model_card, scan)
    return SegmentationOutcome(
        result.labels, seconds | result.seconds, model.runtime, model, warnings, result.quality
    )


def inference_threads() -> int:
    """ONNX Runtime threads: every core but one, which stays free for the viewer."""
    return max(1, (os.cpu_count() or 2) - 1)


def prediction_metadata(scan: Volume, outcome: SegmentationOutcome, model_path: Path) -> dict:
    """Layer metadata of a prediction: the scan's geometry (for the writer) and provenance."""
    return {
        "kdseg": {
            "affine": scan.affine.tolist(),
            "source": str(scan.source or ""),
            "shape": list(scan.shape),
            "model": str(model_path),
            "runtime": outcome.runtime,
            "seconds": {k: round(v, 4) for k, v in outcome.seconds.items()},
        }
    }


#: The verdict badge: words and colours a reader takes in at a glance.
VERDICT_BADGES = {
    OK: ("OK", "#1b7f3b"),
    CHECK: ("CHECK", "#b26a00"),
    UNRELIABLE: ("UNRELIABLE", "#b00020"),
}
#: Columns of the slice table when there is no ground truth: the model's own uncertainty.
UNCERTAINTY_COLUMNS = ("slice", "uncertainty")


def quality_lines(report: QualityReport) -> list[str]:
    """The reasons, and the least certain slices, in a clinician's words: one label each."""
    lines = [f"• {reason}" for reason in report.reasons] or ["Nothing unusual was found."]
    if report.worst_slices:
        lines.append("Least certain slices: " + ", ".join(map(str, report.worst_slices)))
    if not report.scan.known:
        lines.append("How this scan compares with the training scans is unknown (older model).")
    return lines


def runs_on(runtime: str) -> str:
    """Where a model runs, in words, from its runtime's description."""
    from napari_kdseg.inference.onnx_runtime import CUDA

    return "the graphics card" if CUDA in runtime else "this computer's processor"


def format_seconds(seconds: dict[str, float]) -> str:
    """``preprocess 0.12 s · infer 1.30 s · … · total 1.50 s``."""
    parts = [f"{stage} {value:.2f} s" for stage, value in seconds.items()]
    return " · ".join([*parts, f"total {sum(seconds.values()):.2f} s"])


def format_volume_scores(comparison: VolumeComparison) -> str:
    scores = comparison.volume
    return (
        f"Volume: Dice {scores.dice:.3f} · HD95 {_mm(scores.hd95)} · ASD {_mm(scores.asd)} "
        f"({scores.predicted_voxels} predicted / {scores.truth_voxels} true voxels; "
        f"{len(comparison.slices)} slices scored)"
    )


def model_labels(entries: list[LibraryModel]) -> list[str]:
    """Each model's name in the list: what it is in words, numbered where two read alike
    (two exports of the same training); a file that cannot be used by its file name."""
    titles = [entry.title() if entry.usable else f"{entry.name} (unusable)" for entry in entries]
    seen: dict[str, int] = {}
    labels = []
    for title in titles:
        seen[title] = seen.get(title, 0) + 1
        labels.append(f"{title} ({seen[title]})" if titles.count(title) > 1 else title)
    return labels


def default_save_path(layer: Layer) -> Path:
    """Beside the scan it was predicted on: ``Case00_prediction.nii.gz``."""
    source = (layer.metadata.get("kdseg") or {}).get("source")
    stem = layer.name.replace("/", "_").replace(" ", "_")
    if source:
        source_path = Path(source)
        name = case_stem(source_path)
        if name is None:  # a DICOM series folder: its whole name
            name = source_path.name
        return source_path.with_name(f"{name}_prediction.nii.gz")
    return Path.home() / f"{stem}.nii.gz"


def contour_colormap(colour: str) -> DirectLabelColormap:
    """Every non-zero label in ``colour``, background transparent."""
    return DirectLabelColormap(color_dict={None: colour, 0: "transparent"})


_ONE_SIDED_TIPS = {
    "none in truth": "prostate predicted on a slice where the ground truth has none: Dice 0, "
    "and no border distances to measure (n/a)",
    "missed": "prostate in the ground truth that the prediction missed on this slice: Dice 0, "
    "and no border distances to measure (n/a)",
}


def _one_sided(scores: SliceScores) -> str:
    """Why a slice scores Dice 0 with no distances, in two words (the tooltip says more);
    empty for a slice both masks reach or neither."""
    if scores.truth_pixels == 0 and scores.predicted_pixels > 0:
        return "none in truth"
    if scores.predicted_pixels == 0 and scores.truth_pixels > 0:
        return "missed"
    return ""


def _mm(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} mm"


class _NumericItem(QTableWidgetItem):
    """A table cell that sorts by number, with undefined (NaN) values after every number."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__(text)
        self.setData(_SORT_ROLE, value)
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)
        self.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(_SORT_ROLE), other.data(_SORT_ROLE)
        mine = math.inf if mine is None or math.isnan(mine) else mine
        theirs = math.inf if theirs is None or math.isnan(theirs) else theirs
        return bool(mine < theirs)


# --------------------------------------------------------------------------- the panel


class FittedLabel(QLabel):
    """A wrapping label that prefers the height of its lines at its width: in a form, a plain
    one prefers that of its text wrapped at a width Qt guesses, and the form leaves the
    difference as gaps above and below the text."""

    def __init__(self) -> None:
        super().__init__()
        self.setWordWrap(True)

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(hint.width(), self.heightForWidth(self.width()))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self.updateGeometry()  # another width, another number of lines


class SegmentationPanel(QWidget):
    """Pick a model and a scan, segment it, compare a prediction with the ground truth."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.comparison: VolumeComparison | None = None
        self.quality: QualityReport | None = None
        self._compared_layer: Labels | None = None
        self._models: dict[tuple[Path, int], SegmentationModel] = {}
        self._workers: list[Any] = []

        # The groups scroll, so the dock shares a laptop screen (1280 x 800) with the
        # distillation panel without pushing either off it.
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(self._build_segment_group())
        layout.addWidget(self._build_compare_group())
        layout.addStretch(1)
        self.scroll = VerticalScrollArea(body)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)

        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._on_layers_changed)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layer_combos)
        self.refresh_models()
        self._refresh_layer_combos()

    # ------------------------------------------------------------------ building the UI

    def _build_segment_group(self) -> QGroupBox:
        group = QGroupBox("Segment")
        # The choices in a form; what follows Segment under it across the group's width, in
        # a box layout, which gives wrapped text the height it needs (a form gave the
        # verdict's reasons one line each once they changed).
        layout = QVBoxLayout(group)
        form = QFormLayout()
        layout.addLayout(form)

        self.model_combo = QComboBox()
        # a long name does not widen the dock: the list and the tooltip show it whole
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_combo.setMinimumContentsLength(16)
        self.model_combo.currentIndexChanged.connect(self._show_model_card)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse_model)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("List the model library again")
        self.refresh_button.clicked.connect(lambda: self.refresh_models())
        # the combo across the row, so a model's name reads whole beside the other panel
        form.addRow("Model", self.model_combo)
        model_buttons = QHBoxLayout()
        model_buttons.addWidget(self.browse_button)
        model_buttons.addWidget(self.refresh_button)
        model_buttons.addStretch(1)
        form.addRow("", model_buttons)

        self.card_label = FittedLabel()
        form.addRow("", self.card_label)

        self.image_combo = QComboBox()
        form.addRow("Image", self.image_combo)

        self.tta_check = QCheckBox("Average over in-plane flips (3x slower)")
        self.tta_check.setToolTip(
            "Test-time augmentation: the slices are also segmented flipped, and the "
            "predictions averaged"
        )
        form.addRow("", self.tta_check)

        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(self.segment)
        layout.addWidget(self.segment_button)

        self.segment_problem_label = _problem_label()
        layout.addWidget(self.segment_problem_label)

        self.timing_label = QLabel()
        self.timing_label.setWordWrap(True)
        layout.addWidget(self.timing_label)

        # The badge on its own line and every reason under it, each wrapping across the
        # panel's whole width: beside the badge, the reasons were clipped.
        self.verdict_badge = QLabel()
        self.verdict_badge.setToolTip(
            "How far to trust this segmentation: OK, CHECK (look at it) or UNRELIABLE"
        )
        self.verdict_badge.setVisible(False)
        badge_row = QHBoxLayout()
        badge_row.addWidget(self.verdict_badge)
        badge_row.addStretch(1)
        layout.addLayout(badge_row)
        self.reasons_box = QWidget()
        self.reasons_layout = QVBoxLayout(self.reasons_box)
        self.reasons_layout.setContentsMargins(0, 0, 0, 0)
        self.reason_labels: list[QLabel] = []
        layout.addWidget(self.reasons_box)
        return group

    def _build_compare_group(self) -> QGroupBox:
        group = QGroupBox("Compare with ground truth")
        layout = QVBoxLayout(group)
        form = QFormLayout()
        self.truth_combo = QComboBox()
        self.prediction_combo = QComboBox()
        form.addRow(f"Ground truth ({_COLOUR_NAMES[TRUTH_COLOUR]})", self.truth_combo)
        form.addRow(f"Prediction ({_COLOUR_NAMES[PREDICTION_COLOUR]})", self.prediction_combo)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.compare_button = QPushButton("Compare")
        self.compare_button.clicked.connect(self.compare)
        self.worst_button = QPushButton("Worst first")
        self.worst_button.setToolTip("Order the slices from the lowest Dice up")
        self.worst_button.clicked.connect(self.show_worst_first)
        self.save_button = QPushButton("Save prediction…")
        self.save_button.setToolTip("Write the prediction as NIfTI in its scan's geometry")
        self.save_button.clicked.connect(self._save_with_dialog)
        for button in (self.compare_button, self.worst_button, self.save_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)

        self.compare_problem_label = _problem_label()
        layout.addWidget(self.compare_problem_label)

        self.volume_label = QLabel()
        self.volume_label.setWordWrap(True)
        self.volume_label.setToolTip(
            "Dice: overlap of prediction and ground truth (1 is perfect). HD95: the 95th "
            "percentile of the distances between their borders. ASD: the average distance "
            "between their borders"
        )
        layout.addWidget(self.volume_label)

        self.table = QTableWidget(0, len(SLICE_COLUMNS))
        self.table.setHorizontalHeaderLabels([header for _, header in SLICE_COLUMNS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setToolTip("Click a slice to show it in the viewer")
        self.table.cellClicked.connect(self.go_to_row)
        self.table.currentCellChanged.connect(lambda row, *_: self.go_to_row(row))
        layout.addWidget(self.table)
        return group

    # ------------------------------------------------------------------ models

    def refresh_models(self, select: Path | None = None) -> None:
        """Fill the model combo from the library (plus ``select`` when it lies elsewhere)."""
        current = select or self.selected_model_path()
        entries = list_models()
        if current is not None and current not in {entry.path for entry in entries}:
            entries.append(describe_model(current))
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for entry, label in zip(entries, model_labels(entries), strict=True):
            self.model_combo.addItem(label, entry)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, entry.details(), Qt.ItemDataRole.ToolTipRole
            )
        if current is not None:
            for index in range(self.model_combo.count()):
                if self.model_combo.itemData(index).path == current:
                    self.model_combo.setCurrentIndex(index)
        self.model_combo.blockSignals(False)
        self._show_model_card()

    def selected_model(self) -> LibraryModel | None:
        entry = self.model_combo.currentData()
        return entry if isinstance(entry, LibraryModel) else None

    def selected_model_path(self) -> Path | None:
        entry = self.selected_model()
        return None if entry is None else entry.path

    def choose_model(self, path: str | Path) -> None:
        """Select ``path`` (adding it to the list when it is outside the library)."""
        self.refresh_models(select=Path(path))

    def _browse_model(self) -> None:
        start = str(self.selected_model_path() or library_dir())
        path, _ = QFileDialog.getOpenFileName(self, "Choose an ONNX model", start, "ONNX (*.onnx)")
        if path:
            self.choose_model(path)

    def _show_model_card(self, *_: Any) -> None:
        entry = self.selected_model()
        if entry is None:
            self.card_label.setText(
                "No models in the library yet: train one in the Distillation panel, or "
                "Browse… for an .onnx file"
            )
            self.card_label.setToolTip(f"The model library: {library_dir()}")
        else:
            self.card_label.setText(entry.summary())
            self.card_label.setToolTip(entry.details())
        self.model_combo.setToolTip(
            f"Models in the model library ({library_dir()})"
            + (f"\n\nThe chosen one:\n{entry.details()}" if entry is not None else "")
        )

    # ------------------------------------------------------------------ layers

    def _on_layers_changed(self, event: Any) -> None:
        if event.type == "inserted":
            event.value.events.name.connect(self._refresh_layer_combos)
        elif event.type == "removed":
            with contextlib.suppress(Exception):  # never connected: nothing to undo
                event.value.events.name.disconnect(self._refresh_layer_combos)
        self._refresh_layer_combos()

    def _refresh_layer_combos(self, *_: Any) -> None:
        images = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        _fill(self.image_combo, images)
        _fill(self.truth_combo, labels)
        _fill(self.prediction_combo, labels)

    def _layer(self, combo: QComboBox, kind: type[Layer], role: str) -> Layer:
        name = combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError(f"choose {role} first")
        layer = self.viewer.layers[name]
        if not isinstance(layer, kind):
            raise ValueError(f"layer {name!r} is not a {kind.__name__.lower()} layer")
        return layer

    # ------------------------------------------------------------------ segmenting

    def segment(self) -> None:
        """Segment the chosen image layer with the chosen model in a worker thread."""
        self._clear_problem(self.segment_problem_label)
        try:
            entry = self.selected_model()
            if entry is None:
                raise ValueError("choose a model first (the library is empty: Browse…)")
            if not entry.usable:
                raise ValueError(f"{entry.path}: {entry.problem}")
            image = self._layer(self.image_combo, Image, "an image layer")
            scan = volume_from_layer(image)
        except Exception as error:
            self._report_problem(self.segment_problem_label, "Cannot segment", error)
            return
        cached = self._models.get(_file_key(entry.path))
        self.segment_button.setEnabled(False)
        self.timing_label.setText(f"Segmenting {image.name} with {entry.title()}…")
        worker = create_worker(
            segment_layer_volume,
            entry.path,
            scan,
            self.tta_check.isChecked(),
            cached,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(
            lambda outcome: self._add_prediction(image, scan, entry.path, outcome)
        )
        worker.errored.connect(
            lambda error: self._failed(
                self.timing_label, self.segment_problem_label, "Segmentation failed", error
            )
        )
        worker.finished.connect(lambda: self.segment_button.setEnabled(True))
        self._start(worker)

    def _add_prediction(
        self, image: Layer, scan: Volume, model_path: Path, outcome: SegmentationOutcome
    ) -> None:
        if outcome.model is not None:
            self._models[_file_key(model_path)] = outcome.model
        name = f"{image.name}{PREDICTION_SUFFIX}"
        metadata = prediction_metadata(scan, outcome, model_path)
        existing = next((layer for layer in self.viewer.layers if layer.name == name), None)
        if isinstance(existing, Labels) and existing.data.shape == outcome.labels.shape:
            existing.data = outcome.labels
            existing.metadata = metadata
            layer = existing
        else:
            layer = self.viewer.add_labels(
                outcome.labels,
                name=name,
                scale=image.scale,
                translate=image.translate,
                units=image.units,  # the scan's (mm from the reader): one scale bar for both
                metadata=metadata,
                opacity=0.5,
            )
        warnings = "".join(f"\n⚠ {warning}" for warning in outcome.warnings)
        total = sum(outcome.seconds.values())
        self.timing_label.setText(
            f"{layer.name}: {int(outcome.labels.sum())} voxels, segmented in {total:.2f} s"
            f"\nRuns on: {runs_on(outcome.runtime)}{warnings}"
        )
        self.timing_label.setToolTip(f"{format_seconds(outcome.seconds)}\n{outcome.runtime}")
        for warning in outcome.warnings:
            # napari's toast shows one line, cut: a few words that fit, the whole in the panel
            show_warning(WARNING_TOASTS.get(warning, "Read the warning in the panel"))
        self.volume_label.setText("")  # an earlier comparison's scores are not this one's
        self.show_quality(outcome.quality, layer)
        self.prediction_combo.setCurrentText(layer.name)
        truth = f"{image.name} prostate"
        if truth in self.viewer.layers:
            self.truth_combo.setCurrentText(truth)
        elif self.truth_combo.currentText() == layer.name:
            self.truth_combo.setCurrentIndex(-1)  # this scan has no ground truth to offer

    def show_quality(self, report: QualityReport | None, layer: Labels) -> None:
        """The verdict badge and reasons; the slice table lists the slices by uncertainty
        (least certain first) until a comparison with the truth replaces it."""
        self.quality = report
        for label in self.reason_labels:
            self.reasons_layout.removeWidget(label)
            label.deleteLater()
        self.reason_labels = []
        if report is None:
            self.verdict_badge.setVisible(False)
            return
        text, colour = VERDICT_BADGES[report.verdict]
        self.verdict_badge.setText(f" {text} ")
        self.verdict_badge.setStyleSheet(
            f"background-color: {colour}; color: white; font-weight: bold; border-radius: 3px"
        )
        self.verdict_badge.setVisible(True)
        for line in quality_lines(report):
            label = QLabel(line)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.reasons_layout.addWidget(label)
            self.reason_labels.append(label)
        layer.metadata.setdefault("kdseg", {})["quality"] = report.to_json()
        if report.slice_axis == "scan":
            self.comparison = None
            self._compared_layer = layer
            self.fill_uncertainty_table(report)

    def fill_uncertainty_table(self, report: QualityReport) -> None:
        """One row per slice with a predicted border, least certain first; the worst slices
        the report names are highlighted. Headers sort by slice or by uncertainty."""
        table = self.table
        ranked = sorted(report.slice_uncertainty.items(), key=lambda item: -item[1])
        table.blockSignals(True)
        table.setSortingEnabled(False)
        table.clearContents()
        table.setColumnCount(len(UNCERTAINTY_COLUMNS))
        table.setHorizontalHeaderLabels(["slice", "Uncertainty (0-1)"])
        table.setRowCount(len(ranked))
        worst = set(report.worst_slices)
        for row, (index, value) in enumerate(ranked):
            cells = (_NumericItem(index, str(index)), _NumericItem(value, f"{value:.3f}"))
            for column, cell in enumerate(cells):
                if index in worst:
                    cell.setBackground(QColor(VERDICT_BADGES[CHECK][1]))
                    cell.setToolTip("One of the slices the model is least sure about")
                table.setItem(row, column, cell)
        table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        table.setSortingEnabled(True)
        table.blockSignals(False)

    # ------------------------------------------------------------------ comparing

    def compare(self) -> None:
        """Show truth and prediction as contours and score them in a worker thread."""
        self._clear_problem(self.compare_problem_label)
        try:
            truth = self._layer(self.truth_combo, Labels, "a ground-truth labels layer")
            prediction = self._layer(self.prediction_combo, Labels, "a prediction labels layer")
            # by name (unique in a viewer): napari hands plugins a new proxy per look-up
            if truth.name == prediction.name:
                raise ValueError("ground truth and prediction are the same layer")
            truth_data, prediction_data = np.asarray(truth.data), np.asarray(prediction.data)
            if truth_data.shape != prediction_data.shape:
                raise ValueError(
                    f"{truth.name!r} {truth_data.shape} and {prediction.name!r} "
                    f"{prediction_data.shape} differ in shape"
                )
        except Exception as error:
            self._report_problem(self.compare_problem_label, "Cannot compare", error)
            return
        show_as_contour(truth, TRUTH_COLOUR)
        show_as_contour(prediction, PREDICTION_COLOUR)
        self.compare_button.setEnabled(False)
        self.volume_label.setText(f"Scoring {prediction.name} against {truth.name}…")
        spacing = tuple(float(s) for s in prediction.scale[-3:])
        worker = create_worker(
            compare_volumes,
            prediction_data,
            truth_data,
            spacing,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda result: self._show_comparison(result, prediction))
        worker.errored.connect(
            lambda error: self._failed(
                self.volume_label, self.compare_problem_label, "Comparison failed", error
            )
        )
        worker.finished.connect(lambda: self.compare_button.setEnabled(True))
        self._start(worker)

    def _show_comparison(self, comparison: VolumeComparison, prediction: Layer) -> None:
        self.comparison = comparison
        self._compared_layer = prediction
        self.volume_label.setText(format_volume_scores(comparison))
        self.show_worst_first()

    def show_worst_first(self) -> None:
        """Fill the table with the slices, worst (lowest Dice) at the top."""
        if self.comparison is not None:
            self.fill_table(worst_first(self.comparison.slices))

    def fill_table(self, slices: list[SliceScores]) -> None:
        """Show ``slices`` in this order; the headers can sort them afterwards."""
        table = self.table
        table.blockSignals(True)
        table.setSortingEnabled(False)
        table.clearContents()
        table.setColumnCount(len(SLICE_COLUMNS))
        table.setHorizontalHeaderLabels([header for _, header in SLICE_COLUMNS])
        table.setRowCount(len(slices))
        for row, scores in enumerate(slices):
            why = _one_sided(scores)
            table.setItem(row, 0, _NumericItem(scores.index, str(scores.index)))
            dice_item = _NumericItem(
                scores.dice, f"{scores.dice:.3f}" + (f": {why}" if why else "")
            )
            table.setItem(row, 1, dice_item)
            table.setItem(row, 2, _NumericItem(scores.hd95, _mm(scores.hd95)))
            table.setItem(row, 3, _NumericItem(scores.asd, _mm(scores.asd)))
            if why:
                # a slice only one of the two masks reaches has no border to measure
                for column in (1, 2, 3):
                    table.item(row, column).setToolTip(_ONE_SIDED_TIPS[why])
        # Sorting stays available from the headers, but enabling it sorts by the header's
        # indicator at once: clear the indicator first so the given order is kept.
        table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        table.setSortingEnabled(True)
        table.blockSignals(False)

    def row_slice(self, row: int) -> int | None:
        """The slice index shown in table row ``row``."""
        item = self.table.item(row, 0)
        return None if item is None else int(item.data(_SORT_ROLE))

    def go_to_row(self, row: int, *_: Any) -> None:
        """Move the viewer to the slice of table row ``row``."""
        index = self.row_slice(row)
        if index is not None:
            self.go_to_slice(index)

    def go_to_slice(self, index: int) -> None:
        """Show slice ``index`` (axis 0) of the compared prediction layer."""
        layer = self._compared_layer
        if layer is None or layer not in self.viewer.layers:
            self.viewer.dims.set_current_step(0, index)
            return
        axis = self.viewer.dims.ndim - layer.ndim
        position = np.zeros(layer.ndim)
        position[0] = index
        self.viewer.dims.set_point(axis, float(layer.data_to_world(position)[0]))

    # ------------------------------------------------------------------ saving

    def _save_with_dialog(self) -> None:
        self._clear_problem(self.compare_problem_label)
        try:
            layer = self._layer(self.prediction_combo, Labels, "a prediction labels layer")
        except ValueError as error:
            self._report_problem(self.compare_problem_label, "Cannot save", error)
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save prediction", str(default_save_path(layer)), "NIfTI (*.nii.gz *.nii)"
        )
        if path:
            self.save_prediction(path, layer)

    def save_prediction(self, path: str | Path, layer: Labels | None = None) -> list[str]:
        """Write ``layer`` (default: the chosen prediction) as NIfTI in its scan's geometry."""
        self._clear_problem(self.compare_problem_label)
        try:
            if layer is None:
                layer = self._layer(self.prediction_combo, Labels, "a prediction labels layer")
            data, attributes, _ = layer.as_layer_data_tuple()
            written = write_labels(str(path), data, attributes)
        except Exception as error:
            self._report_problem(self.compare_problem_label, "Cannot save the prediction", error)
            return []
        show_info(f"Saved {Path(written[0]).name}")
        return written

    # ------------------------------------------------------------------ workers

    def _start(self, worker: Any) -> None:
        """Start ``worker``, keeping a reference until it finishes."""
        self._workers.append(worker)
        worker.finished.connect(lambda: self._workers.remove(worker))
        worker.start()

    def _report_problem(self, label: QLabel, what: str, error: BaseException) -> None:
        """``what`` went wrong: the whole reason in ``label`` (napari's notification shows one
        line, cut), a short notification that points there."""
        label.setText(f"{what}: {error}")
        label.setVisible(True)
        show_error(f"{what}: see the panel")

    def _failed(self, busy_label: QLabel, label: QLabel, what: str, error: BaseException) -> None:
        """A worker failed: its "…ing" line goes, the reason shows."""
        busy_label.setText("")
        self._report_problem(label, what, error)

    def _clear_problem(self, label: QLabel) -> None:
        label.setText("")
        label.setVisible(False)

    @property
    def busy(self) -> bool:
        """Whether a segmentation or comparison is still running."""
        return bool(self._workers)


def _problem_label() -> QLabel:
    """Where a failure is told whole: wrapping, selectable, hidden until there is one."""
    label = QLabel()
    label.setWordWrap(True)
    label.setTextInteractionFlags(
        Qt.TextInteractionFlag.TextSelectableByMouse
        | Qt.TextInteractionFlag.TextSelectableByKeyboard
    )
    label.setStyleSheet(f"color: {_ERROR_COLOUR};")
    label.setVisible(False)
    return label


def show_as_contour(layer: Labels, colour: str) -> None:
    """Draw a labels layer as an opaque ``colour`` outline (the paper's Figure 3 style)."""
    layer.colormap = contour_colormap(colour)
    layer.contour = CONTOUR_PIXELS
    layer.opacity = 1.0
    layer.visible = True


def _file_key(path: Path) -> tuple[Path, int]:
    """A loaded model stays valid while its file is unchanged (same path, same mtime)."""
    try:
        return path, path.stat().st_mtime_ns
    except OSError:
        return path, -1


def _fill(combo: QComboBox, names: list[str]) -> None:
    """Replace a combo's items, keeping the current choice when it still exists."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)
