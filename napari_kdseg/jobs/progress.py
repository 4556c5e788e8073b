"""Fold a ``kdseg loso`` event stream into what the distillation panel shows (no Qt, no TF).

:class:`LosoProgress` takes the events of :mod:`napari_kdseg.training.progress` and
:mod:`napari_kdseg.experiments.grid` one by one (``cell``, ``start``, ``resumed``, ``step``,
``epoch``, ``cell_done``, ``report``, ``exported``, ``stopped``) and keeps the overall
fraction done, the stage in words, the device, the loss and Dice curves of every training and
the scores of every finished model. :meth:`LosoProgress.apply` also returns the event as a
plain sentence for the panel's log, and :func:`is_noise` tells the child's other lines a
person need not read (TensorFlow's logging, JSON, the Markdown report) from those to show.

What the panel shows is in a clinician's words (``ENet distilled from UNet++ (all three
ways)``); the paper's names (``w/ +AAM + KMM + LM``) and file paths are kept for tooltips
(:attr:`LosoProgress.stage_details`, :attr:`CellScore.paper_variant`,
:attr:`ExportedModel.path`), and the raw log shows the events as printed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_kdseg.architectures import DISPLAY_NAMES
from napari_kdseg.distillation import terms
from napari_kdseg.jobs.plan import LOSS_WORDS, in_words
from napari_kdseg.teachers import TAPS

#: Lines of TensorFlow, absl, XLA and CUDA start-up logging: glog's ``I0000 00:00:...`` prefix,
#: absl's warning about it, and the usual messages that come without the prefix.
_BACKEND_LOG = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|All log messages before absl::InitializeLog"
    r"|\b(cuda|cudnn|cublas|cufft|tensorrt|oneDNN|XLA|TF_ENABLE_ONEDNN_OPTS)\b"
    r"|tensorflow|rebuild TensorFlow|To enable the following instructions",
    re.IGNORECASE,
)
#: Markdown structure: table rows and rules, headings.
_MARKDOWN = re.compile(r"^\s*(\||#{1,6} )")
#: Teachers by the names events give them: the architectures', and TAPS's.
_TEACHER_NAMES = {**DISPLAY_NAMES, TAPS: "TAPS"}
#: How the setup names each way of learning from the teacher (``Match the teacher's
#: predictions``) starts; the rest (``predictions``) names what is matched.
_MATCH = "Match the teacher's "
#: How ``kdseg distill --teacher-labels`` names its variant (``teacher labels +LM``).
_TEACHER_LABELS = "teacher labels"


@dataclass
class Curve:
    """One training's running loss per optimisation step and validation Dice per epoch.

    ``key`` names the grid cell it trains, so that a resumed training goes on with its curve;
    ``epochs`` and ``steps_per_epoch`` are its planned length (0 until its start event).
    """

    label: str
    loss_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    dice_epochs: list[int] = field(default_factory=list)
    dices: list[float] = field(default_factory=list)
    key: str = ""
    epochs: int = 0
    steps_per_epoch: int = 0

    def keep_until(self, epoch: int) -> None:
        """Drop the points after ``epoch``: a training resumed from that epoch's checkpoint
        trains the rest again (0: a fresh training, nothing kept)."""
        last_step = epoch * self.steps_per_epoch
        kept = [i for i, step in enumerate(self.loss_steps) if step <= last_step]
        self.loss_steps = [self.loss_steps[i] for i in kept]
        self.losses = [self.losses[i] for i in kept]
        kept = [i for i, done in enumerate(self.dice_epochs) if done <= epoch]
        self.dice_epochs = [self.dice_epochs[i] for i in kept]
        self.dices = [self.dices[i] for i in kept]


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
        """``teacher``, ``alone`` or ``distilled (all three ways)``: the paper's w/o and w/
        in words."""
        if self.variant == "teacher":
            return "teacher"
        if self.variant in ("w/o", ""):
            return "alone"
        return f"distilled ({distilled_words(self.variant)})"

    @property
    def paper_variant(self) -> str:
        """The paper's name of the variant (Table 2): ``teacher``, ``w/o``, ``w/ +AAM``."""
        return self.variant if self.variant in ("teacher", "w/o") else f"w/ {self.variant}"

    @property
    def dice_text(self) -> str:
        if self.mean is None or math.isnan(self.mean):
            return "–"
        return f"{self.mean:.3f} ± {self.std or 0.0:.3f}"


@dataclass(frozen=True)
class ExportedModel:
    """A student saved into the model library: its file and what it is in words."""

    path: str
    label: str


@dataclass
class LosoProgress:
    """The state of one ``kdseg loso`` run as its events arrive.

    ``stage`` says where the run is in words; ``stage_details`` says the same with the
    paper's names and the file paths, for a tooltip.
    """

    cell_number: int = 0
    cells: int = 0
    cell_label: str = ""
    stage: str = "waiting for the training process"
    stage_details: str = ""
    device: str | None = None
    #: measured seconds per optimisation step of the latest training that reported two steps
    seconds_per_step: float | None = None
    curves: list[Curve] = field(default_factory=list)
    scores: list[CellScore] = field(default_factory=list)
    exported: list[ExportedModel] = field(default_factory=list)
    report: dict[str, str] = field(default_factory=dict)
    revision: int = 0
    _cell: dict[str, Any] = field(default_factory=dict)
    _epochs: int = 1
    _steps_per_epoch: int = 0
    #: each started training's optimisation steps, by cell number (0: a single training)
    _cell_steps: dict[int, int] = field(default_factory=dict)
    _steps_done: int = 0  # in the current cell, counting the epochs of a resumed checkpoint
    _cell_finished: bool = False
    _child_stage_eta_s: float | None = None
    #: (event time, steps done) at the current training's first step event: compiling the
    #: step and loading the data come before it, and are not steps
    _rate_anchor: tuple[float, int] | None = None
    _curve: Curve | None = None

    @property
    def fraction(self) -> float:
        """Share of the job's optimisation steps done, 0..1 (evaluation and export are not
        counted): the steps of every training over those of the whole job, a training not
        started yet assumed as long as the current one. Before any training reported its
        length, finished cells over cells; a single training (``kdseg distill``, no ``cell``
        events) is one cell."""
        typical = self._typical_cell_steps()
        if typical is None:
            if not self.cells:
                return float(self._cell_finished)
            return (self.cell_number - 1 + self._cell_finished) / self.cells
        before = sum(self._cell_steps.get(n, typical) for n in range(1, self.cell_number))
        done = before + self._current_steps_done(typical)
        return min(1.0, done / self._total_steps(typical))

    def overall_eta_s(self) -> float | None:
        """Seconds of training left in the whole job: its steps left times the measured
        seconds per step; None until a training reported two steps."""
        typical = self._typical_cell_steps()
        if self.seconds_per_step is None or typical is None:
            return None
        return (1.0 - self.fraction) * self._total_steps(typical) * self.seconds_per_step

    @property
    def stage_eta_s(self) -> float | None:
        """Seconds left in the current training: its steps left times the measured seconds
        per step, or the child's own estimate until this panel measured one."""
        steps = self._cell_steps.get(self.cell_number)
        if self._cell_finished:
            return 0.0
        if self.seconds_per_step is None or steps is None:
            return self._child_stage_eta_s
        return max(0, steps - self._steps_done) * self.seconds_per_step

    @property
    def curve(self) -> Curve | None:
        """The curve of the training running now (the last one started)."""
        return self._curve

    def apply(self, name: str, fields: dict[str, Any]) -> str | None:
        """Take one event; unknown events are ignored (the stream may grow).

        Returns the event as a plain sentence for the log, or None for one not worth a line
        (``step`` and ``stage_progress`` come many a minute: the bar and the stage show them).
        """
        handler = getattr(self, f"_on_{name}", None)
        if handler is None:
            return None
        sentence = handler(fields)
        self.revision += 1
        return sentence

    # ------------------------------------------------------------------ event handlers

    def _on_cell(self, fields: dict[str, Any]) -> str:
        self._cell = fields
        self.cell_number = int(fields.get("number", self.cell_number + 1))
        self.cells = int(fields.get("cells", self.cells))
        self._steps_done, self._cell_finished = 0, False
        self._child_stage_eta_s, self._rate_anchor, self._curve = None, None, None
        self.cell_label = cell_label(fields)
        self.stage_details = f"{paper_cell_label(fields)}, target site {fields.get('target')}"
        self.stage = (
            f"model {self.cell_number} of {self.cells}: {self.cell_label}, "
            f"unseen site {fields.get('target')}: preparing"
        )
        return (
            f"Model {self.cell_number} of {self.cells}: {self.cell_label}, trained without "
            f"site {fields.get('target')} and then scored on it."
        )

    def _on_start(self, fields: dict[str, Any]) -> str:
        self.device = str(fields.get("device") or "unknown")
        resumed_from = int(fields.get("initial_epoch") or 0)
        epochs = int(fields.get("epochs") or 1)
        self._epochs = epochs
        self._steps_per_epoch = int(fields.get("steps_per_epoch") or 0)
        if self._steps_per_epoch:
            self._cell_steps[self.cell_number] = epochs * self._steps_per_epoch
        self._steps_done, self._cell_finished = resumed_from * self._steps_per_epoch, False
        self._rate_anchor = None
        self._start_curve(resumed_from)
        self.stage = f"{self._cell_prefix()}: training, epoch {resumed_from + 1}/{epochs}"
        steps = fields.get("steps_per_epoch")
        each = f" of {steps} steps each" if steps else ""
        where = "the CPU" if self.device == "cpu" else self.device
        if resumed_from:
            return f"Training goes on at epoch {resumed_from + 1} of {epochs}{each}, on {where}."
        return f"Training for {epochs} epoch{'s' * (epochs != 1)}{each}, on {where}."

    def _on_resumed(self, fields: dict[str, Any]) -> str:
        self.stage = f"{self._cell_prefix()}: resuming after epoch {fields.get('epochs_done')}"
        return f"Resuming from the checkpoint saved after epoch {fields.get('epochs_done')}."

    def _on_step(self, fields: dict[str, Any]) -> None:
        epoch, step, steps = (int(fields.get(k) or 1) for k in ("epoch", "step", "steps"))
        epochs = self._epochs
        if self._steps_per_epoch != steps:  # a start event without steps_per_epoch
            self._steps_per_epoch = steps
            self._cell_steps[self.cell_number] = epochs * steps
            self._current_curve().steps_per_epoch = steps
        self._steps_done = (epoch - 1) * steps + step
        self._child_stage_eta_s = _number(fields.get("eta_s"))
        self._measure_step_time(_number(fields.get("time")))
        loss = _number(fields.get("loss"))
        if loss is not None:
            curve = self._current_curve()
            curve.loss_steps.append((epoch - 1) * steps + step)
            curve.losses.append(loss)
        self.stage = f"{self._cell_prefix()}: training, epoch {epoch}/{epochs}, step {step}/{steps}"

    def _on_epoch(self, fields: dict[str, Any]) -> str:
        epoch, epochs = int(fields.get("epoch") or 1), int(fields.get("epochs") or 1)
        self._epochs = epochs
        self._steps_done = max(self._steps_done, epoch * self._steps_per_epoch)
        self._child_stage_eta_s = _number(fields.get("eta_s"))
        dice = _number(fields.get("val_dice"))
        if dice is not None:
            curve = self._current_curve()
            curve.dice_epochs.append(epoch)
            curve.dices.append(dice)
        self.stage = f"{self._cell_prefix()}: epoch {epoch}/{epochs} done"
        scored = f": validation Dice {dice:.3f}" if dice is not None else ""
        return f"Epoch {epoch} of {epochs} done{scored}."

    def _on_done(self, fields: dict[str, Any]) -> str:
        self._cell_finished = True
        best = _number(fields.get("best_val_dice"))
        sentence = "Training done" + (
            f", best validation Dice {best:.3f}." if best is not None else "."
        )
        if not self.cells:
            self.stage = "training done; saving the student for segmentation"
            return sentence
        self.stage = f"{self._cell_prefix()}: scoring on target {self._cell.get('target')}"
        return f"{sentence} Scoring on site {self._cell.get('target')}."

    def _on_stage_progress(self, fields: dict[str, Any]) -> None:
        done, total = fields.get("done"), fields.get("total")
        stage = str(fields.get("stage") or "preparation")
        self.stage = f"{self._cell_prefix()}: {stage}, scan {done} of {total}"

    def _on_stage_done(self, fields: dict[str, Any]) -> str:
        # TAPS's maps take about 30 s a scan before training starts: say when they are ready
        stage = str(fields.get("stage") or "preparation")
        self.stage = f"{self._cell_prefix()}: {stage} ready"
        return f"{stage.capitalize()} ready."

    def _on_cell_done(self, fields: dict[str, Any]) -> str:
        self._cell_finished = True
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
        score = self.scores[-1]
        return (
            f"{self.cell_label}{skipped}: Dice {score.dice_text} on site {score.target} "
            f"({score.cases} case{'s' * (score.cases != 1)})."
        )

    def _on_report(self, fields: dict[str, Any]) -> str:
        self.report = {key: str(value) for key, value in fields.items() if key != "time"}
        self.stage = "all models scored; saving the students for segmentation"
        self.stage_details = f"report: {fields.get('table')}"
        return "All models scored: the results table below shows how well."

    def _on_exported(self, fields: dict[str, Any]) -> str:
        saved = ExportedModel(str(fields.get("path")), exported_label(fields))
        self.exported.append(saved)
        self.stage = f"saved for segmentation: {saved.label}"
        self.stage_details = (
            f"{paper_cell_label(fields)}: {saved.path}" if fields.get("model") else saved.path
        )
        return f"Saved {saved.label} to the model library; the Segmentation panel lists it."

    def _on_stopped(self, fields: dict[str, Any]) -> str:
        self.stage = f"{self._cell_prefix()}: stopped at a step boundary; checkpoint kept"
        return "Stopped after a training step; the checkpoint is kept and Start resumes it."

    def _on_warning(self, fields: dict[str, Any]) -> str:
        site = f" (site {fields['site']})" if fields.get("site") else ""
        return f"Warning{site}: {fields.get('message')}"

    # ------------------------------------------------------------------ helpers

    def _typical_cell_steps(self) -> int | None:
        """The steps assumed for a training not started yet: the current one's, else those
        of the last one started; None before any reported its length."""
        if self.cell_number in self._cell_steps:
            return self._cell_steps[self.cell_number]
        return next(reversed(self._cell_steps.values()), None)

    def _total_steps(self, typical: int) -> int:
        numbers = range(1, self.cells + 1) if self.cells else (self.cell_number,)
        return sum(self._cell_steps.get(number, typical) for number in numbers)

    def _current_steps_done(self, typical: int) -> int:
        if self._cell_finished:
            return self._cell_steps.get(self.cell_number, typical)
        return self._steps_done

    def _measure_step_time(self, now: float | None) -> None:
        """Seconds per step over the current training since its first step event."""
        if now is None:
            return
        if self._rate_anchor is None:
            self._rate_anchor = (now, self._steps_done)
            return
        then, steps_then = self._rate_anchor
        if self._steps_done > steps_then and now >= then:
            self.seconds_per_step = (now - then) / (self._steps_done - steps_then)

    def _cell_prefix(self) -> str:
        if not self.cells:
            return "training"
        return (
            f"model {self.cell_number} of {self.cells}: {self.cell_label}, unseen site "
            f"{self._cell.get('target')}"
        )

    def _start_curve(self, resumed_from: int) -> Curve:
        """The cell's curve, kept up to the checkpoint when its training resumes (its points
        from an earlier job of the same run folder included), else a new one."""
        key = cell_key(self._cell)
        curve = next((curve for curve in self.curves if curve.key == key), None)
        if curve is None:
            curve = Curve(short_cell_label(self._cell), key=key)
            self.curves.append(curve)
        curve.epochs, curve.steps_per_epoch = self._epochs, self._steps_per_epoch
        curve.keep_until(resumed_from)
        self._curve = curve
        return curve

    def _current_curve(self) -> Curve:
        """The running training's curve; one is started for a stream without start event."""
        return self._curve or self._start_curve(0)


def is_noise(line: str) -> bool:
    """Whether a line of the child's output is for machines or developers, not for the
    panel's log: a JSON object, TensorFlow/absl/CUDA logging, Markdown table rows and
    headings (the report, shown as the results table), or a blank line."""
    text = line.strip()
    if not text or (text.startswith("{") and text.endswith("}")):
        return True
    if text.startswith("kdseg "):  # the command's own error line is always for people
        return False
    return bool(_BACKEND_LOG.search(text) or _MARKDOWN.match(line))


def cell_label(cell: dict[str, Any]) -> str:
    """``UNet++ (teacher)``, ``ENet alone`` or ``ENet distilled from UNet++ (all three
    ways)`` for a ``cell`` event: plain words for the paper's w/o and w/."""
    model = DISPLAY_NAMES.get(str(cell.get("model")), str(cell.get("model")))
    variant = str(cell.get("variant") or "")
    if variant == "teacher":
        return f"{model} (teacher)"
    if variant in ("w/o", ""):
        return f"{model} alone"
    teacher = _TEACHER_NAMES.get(str(cell.get("teacher")), str(cell.get("teacher")))
    return f"{model} distilled from {teacher} ({distilled_words(variant)})"


def paper_cell_label(cell: dict[str, Any]) -> str:
    """The paper's name of a cell (Table 2), for tooltips: ``UNet++ teacher``, ``ENet w/o``,
    ``ENet w/ +AAM + KMM + LM, teacher UNet++``."""
    model = DISPLAY_NAMES.get(str(cell.get("model")), str(cell.get("model")))
    variant = str(cell.get("variant") or "w/o")
    if variant in ("teacher", "w/o"):
        return f"{model} {variant}"
    teacher = _TEACHER_NAMES.get(str(cell.get("teacher")), str(cell.get("teacher")))
    return f"{model} w/ {variant}, teacher {teacher}"


def distilled_words(variant: str) -> str:
    """How a distilled student learnt from its teacher, from the paper's name of its variant
    (``+AAM + KMM + LM``, ``+AAM + LM``, ``teacher labels +LM``): ``all three ways``,
    ``matching its predictions and pixel neighbours``, ``learning its masks, matching its
    predictions``. A term the setup has no words for keeps its short name."""
    labels, _, listed = variant.partition("+")
    short_names = [short.strip() for short in listed.split("+") if short.strip()]
    paper = sorted(terms.get(name).short_name for name in terms.PAPER_TERMS)
    if not labels.strip() and sorted(short_names) == paper:
        return "all three ways"
    by_short_name = {spec.short_name: spec.name for spec in terms.registered()}
    order = [spec.short_name for spec in terms.registered()]
    matched = [
        LOSS_WORDS[name].removeprefix(_MATCH)
        if (name := by_short_name.get(short)) in LOSS_WORDS
        else short
        for short in sorted(short_names, key=lambda s: order.index(s) if s in order else len(order))
    ]
    parts = ["learning its masks"] if labels.strip() == _TEACHER_LABELS else []
    if matched:
        parts.append("matching its " + in_words(matched))
    return ", ".join(parts)


def exported_label(fields: dict[str, Any]) -> str:
    """What an ``exported`` event saved, in words: ``ENet distilled from UNet++ (all three
    ways), unseen site C``; the file's name for an event that does not say."""
    if not fields.get("model"):
        return Path(str(fields.get("path"))).name
    unseen = f", unseen site {fields['target']}" if fields.get("target") else ""
    return f"{cell_label(fields)}{unseen}"


def cell_key(cell: dict[str, Any]) -> str:
    """What tells one cell of a grid from the others (empty for a single training)."""
    names = ("target", "model", "variant", "teacher", "seed")
    return "/".join(str(cell.get(name)) for name in names) if cell else ""


def short_cell_label(cell: dict[str, Any]) -> str:
    """``UNet++``, ``ENet alone`` or ``ENet distilled`` for a legend; ``training`` before any
    cell."""
    if not cell:
        return "training"
    model = DISPLAY_NAMES.get(str(cell.get("model")), str(cell.get("model")))
    variant = str(cell.get("variant") or "")
    if variant == "teacher":
        return model
    return f"{model} {'alone' if variant in ('w/o', '') else 'distilled'}"


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
