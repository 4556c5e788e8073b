"""Fold a ``kdseg loso`` event stream into what the distillation panel shows (no Qt, no TF).

:class:`LosoProgress` takes the events of :mod:`napari_kdseg.training.progress` and
:mod:`napari_kdseg.experiments.grid` one by one (``cell``, ``start``, ``resumed``, ``step``,
``epoch``, ``cell_done``, ``report``, ``exported``, ``stopped``) and keeps the overall
fraction done, the stage in words, the device, the loss and Dice curves of every training and
the scores of every finished model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from napari_kdseg.architectures import DISPLAY_NAMES


@dataclass
class Curve:
    """One training's running loss per optimisation step and validation Dice per epoch."""

    label: str
    loss_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    dice_epochs: list[int] = field(default_factory=list)
    dices: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class CellScore:
    """A finished model's Dice on the target site (mean ± std over its cases)."""

    label: str
    model: str
    variant: str
    target: str
    mean: float | None
    std: float | None
    cases: int
    undefined: int

    @property
    def model_name(self) -> str:
        return DISPLAY_NAMES.get(self.model, self.model)

    @property
    def variant_text(self) -> str:
        """``teacher``, ``w/o`` or ``w/ +AAM + KMM + LM``."""
        return self.variant if self.variant in ("teacher", "w/o") else f"w/ {self.variant}"

    @property
    def dice_text(self) -> str:
        if self.mean is None or math.isnan(self.mean):
            return "–"
        return f"{self.mean:.3f} ± {self.std or 0.0:.3f}"


@dataclass
class LosoProgress:
    """The state of one ``kdseg loso`` run as its events arrive."""

    cell_number: int = 0
    cells: int = 0
    cell_label: str = ""
    stage: str = "waiting for the training process"
    device: str | None = None
    within_cell: float = 0.0
    stage_eta_s: float | None = None
    curves: list[Curve] = field(default_factory=list)
    scores: list[CellScore] = field(default_factory=list)
    exported: list[str] = field(default_factory=list)
    report: dict[str, str] = field(default_factory=dict)
    revision: int = 0
    _cell: dict[str, Any] = field(default_factory=dict)
    _epochs: int = 1
    _started: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the run's trainings done, 0..1 (evaluation and export not counted); a
        single training (``kdseg distill``, no ``cell`` events) counts as one cell."""
        if not self.cells:
            return min(1.0, self.within_cell)
        return min(1.0, (self.cell_number - 1 + self.within_cell) / self.cells)

    def overall_eta_s(self, now: float | None = None) -> float | None:
        """Seconds left for the whole run, extrapolated from the time so far; None early on."""
        if self._started is None or self.fraction < 0.02:
            return None
        elapsed = (now or time.time()) - self._started
        return elapsed / self.fraction * (1.0 - self.fraction)

    @property
    def curve(self) -> Curve | None:
        """The curve of the training running now (the last one started)."""
        return self.curves[-1] if self.curves else None

    def apply(self, name: str, fields: dict[str, Any]) -> None:
        """Take one event; unknown events are ignored (the stream may grow)."""
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(fields)
            self.revision += 1

    # ------------------------------------------------------------------ event handlers

    def _on_cell(self, fields: dict[str, Any]) -> None:
        if self._started is None:
            self._started = float(fields.get("time") or time.time())
        self._cell = fields
        self.cell_number = int(fields.get("number", self.cell_number + 1))
        self.cells = int(fields.get("cells", self.cells))
        self.within_cell, self.stage_eta_s = 0.0, None
        self.cell_label = cell_label(fields)
        self.stage = (
            f"cell {self.cell_number}/{self.cells}: {self.cell_label} "
            f"on target {fields.get('target')}: preparing"
        )

    def _on_start(self, fields: dict[str, Any]) -> None:
        if self._started is None:  # a single training has no cell event to start the clock
            self._started = float(fields.get("time") or time.time())
        self.device = str(fields.get("device") or "unknown")
        resumed_from = int(fields.get("initial_epoch") or 0)
        epochs = int(fields.get("epochs") or 1)
        self.within_cell = resumed_from / epochs
        self._epochs = epochs
        self.curves.append(Curve(short_cell_label(self._cell)))
        self.stage = f"{self._cell_prefix()}: training, epoch {resumed_from + 1}/{epochs}"

    def _on_resumed(self, fields: dict[str, Any]) -> None:
        self.stage = f"{self._cell_prefix()}: resuming after epoch {fields.get('epochs_done')}"

    def _on_step(self, fields: dict[str, Any]) -> None:
        epoch, step, steps = (int(fields.get(k) or 1) for k in ("epoch", "step", "steps"))
        epochs = self._epochs
        self.within_cell = min(1.0, ((epoch - 1) * steps + step) / (epochs * steps))
        self.stage_eta_s = _number(fields.get("eta_s"))
        loss = _number(fields.get("loss"))
        if loss is not None:
            curve = self._current_curve()
            curve.loss_steps.append((epoch - 1) * steps + step)
            curve.losses.append(loss)
        self.stage = f"{self._cell_prefix()}: training, epoch {epoch}/{epochs}, step {step}/{steps}"

    def _on_epoch(self, fields: dict[str, Any]) -> None:
        epoch, epochs = int(fields.get("epoch") or 1), int(fields.get("epochs") or 1)
        self._epochs = epochs
        self.within_cell = min(1.0, epoch / epochs)
        self.stage_eta_s = _number(fields.get("eta_s"))
        dice = _number(fields.get("val_dice"))
        if dice is not None:
            curve = self._current_curve()
            curve.dice_epochs.append(epoch)
            curve.dices.append(dice)
        self.stage = f"{self._cell_prefix()}: epoch {epoch}/{epochs} done"

    def _on_done(self, fields: dict[str, Any]) -> None:
        self.within_cell, self.stage_eta_s = 1.0, 0.0
        if not self.cells:
            self.stage = "training done; exporting the student"
            return
        self.stage = f"{self._cell_prefix()}: scoring on target {self._cell.get('target')}"

    def _on_stage_progress(self, fields: dict[str, Any]) -> None:
        done, total = fields.get("done"), fields.get("total")
        stage = str(fields.get("stage") or "preparation")
        self.stage = f"{self._cell_prefix()}: {stage}, scan {done} of {total}"

    def _on_stage_done(self, fields: dict[str, Any]) -> None:
        # TAPS's maps take about 30 s a scan before training starts: say when they are ready
        stage = str(fields.get("stage") or "preparation")
        self.stage = f"{self._cell_prefix()}: {stage} ready"

    def _on_cell_done(self, fields: dict[str, Any]) -> None:
        self.within_cell = 1.0
        self.scores.append(
            CellScore(
                label=self.cell_label,
                model=str(self._cell.get("model", "")),
                variant=str(self._cell.get("variant", "")),
                target=str(self._cell.get("target", "")),
                mean=_number(fields.get("mean")),
                std=_number(fields.get("std")),
                cases=int(fields.get("n") or 0),
                undefined=int(fields.get("undefined") or 0),
            )
        )
        skipped = " (finished earlier)" if fields.get("skipped") else ""
        self.stage = f"{self._cell_prefix()}: scored{skipped}"

    def _on_report(self, fields: dict[str, Any]) -> None:
        self.report = {key: str(value) for key, value in fields.items() if key != "time"}
        self.stage = "all models scored; writing the report and exporting students"

    def _on_exported(self, fields: dict[str, Any]) -> None:
        self.exported.append(str(fields.get("path")))
        self.stage = f"exported {fields.get('path')}"

    def _on_stopped(self, fields: dict[str, Any]) -> None:
        self.stage = f"{self._cell_prefix()}: stopped at a step boundary; checkpoint kept"

    # ------------------------------------------------------------------ helpers

    def _cell_prefix(self) -> str:
        if not self.cells:
            return "training"
        return f"cell {self.cell_number}/{self.cells}: {self.cell_label} on target " + str(
            self._cell.get("target")
        )

    def _current_curve(self) -> Curve:
        if not self.curves:
            self.curves.append(Curve(short_cell_label(self._cell)))
        return self.curves[-1]


def cell_label(cell: dict[str, Any]) -> str:
    """``UNet++ (teacher)``, ``ENet w/o`` or ``ENet w/ +AAM + KMM + LM`` for a ``cell`` event."""
    model = DISPLAY_NAMES.get(str(cell.get("model")), str(cell.get("model")))
    variant = str(cell.get("variant") or "")
    if variant == "teacher":
        return f"{model} (teacher)"
    if variant in ("w/o", ""):
        return f"{model} w/o".strip()
    teacher = DISPLAY_NAMES.get(str(cell.get("teacher")), str(cell.get("teacher")))
    return f"{model} w/ {variant} from {teacher}"


def short_cell_label(cell: dict[str, Any]) -> str:
    """``UNet++``, ``ENet w/o`` or ``ENet w/`` for a legend; ``training`` before any cell."""
    if not cell:
        return "training"
    model = DISPLAY_NAMES.get(str(cell.get("model")), str(cell.get("model")))
    variant = str(cell.get("variant") or "")
    return model if variant == "teacher" else f"{model} {'w/o' if variant == 'w/o' else 'w/'}"


def format_seconds(seconds: float | None) -> str:
    """``1 h 05 min``, ``3 min 20 s`` or ``42 s``; ``–`` when unknown."""
    if seconds is None or math.isnan(seconds):
        return "–"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)
