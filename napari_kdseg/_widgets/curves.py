"""Live training curves for the distillation panel: loss per step and validation Dice per epoch.

A matplotlib canvas embedded in the dock. :meth:`TrainingCurves.show_curves` only remembers
the data; the canvas is redrawn by :meth:`TrainingCurves.redraw_if_due` at most every
``min_interval_s`` seconds, so a fast event stream never floods the GUI thread with drawing.
A redraw updates the lines' data in place and renders once (about 40 ms on an idle core,
mostly text; the GUI thread's longest piece of work while a job runs).
"""

from __future__ import annotations

import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from napari_kdseg.jobs.progress import Curve

#: Seconds between two redraws at most: three a second is live enough for training curves.
REDRAW_INTERVAL_S = 0.33


class TrainingCurves(QWidget):
    """Two plots side by side: running loss per optimisation step, validation Dice per epoch.

    Each training of the run (teacher, student w/o, student w/) is one line, named in the
    legend.
    """

    def __init__(self, min_interval_s: float = REDRAW_INTERVAL_S) -> None:
        super().__init__()
        self.min_interval_s = min_interval_s
        # A fixed layout: matplotlib's constrained layout doubles the cost of every draw.
        self.figure = Figure(figsize=(5.0, 2.4))
        self.figure.subplots_adjust(left=0.11, right=0.98, bottom=0.22, top=0.88, wspace=0.3)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(240)
        self.loss_axes, self.dice_axes = self.figure.subplots(1, 2)
        self.loss_axes.set_title("training loss", fontsize=9)
        self.loss_axes.set_xlabel("step", fontsize=8)
        self.dice_axes.set_title("validation Dice", fontsize=9)
        self.dice_axes.set_xlabel("epoch", fontsize=8)
        self.dice_axes.set_ylim(0.0, 1.0)
        for axes in (self.loss_axes, self.dice_axes):
            axes.tick_params(labelsize=7)
            axes.grid(alpha=0.3)
            # text is most of a draw's cost: few ticks keep the GUI thread's redraws short
            # steps and epochs are whole, even when a one-epoch run shows a single one
            axes.xaxis.set_major_locator(MaxNLocator(4, integer=True, min_n_ticks=1))
            axes.yaxis.set_major_locator(MaxNLocator(4))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._curves: list[Curve] = []
        self._lines: list[tuple[Line2D, Line2D]] = []
        self._dirty = False
        self._last_draw = 0.0
        self.draws = 0

    def show_curves(self, curves: list[Curve]) -> None:
        """Plot ``curves`` at the next due redraw."""
        self._curves = curves
        self._dirty = True

    def redraw_if_due(self, force: bool = False) -> bool:
        """Redraw when there is new data and the last redraw is old enough; True if drawn."""
        if not self._dirty:
            return False
        if not force and time.monotonic() - self._last_draw < self.min_interval_s:
            return False
        self._draw()
        return True

    @property
    def points(self) -> tuple[int, int]:
        """How many loss and Dice points are plotted (for tests and the status line)."""
        return (
            sum(len(curve.losses) for curve in self._curves),
            sum(len(curve.dices) for curve in self._curves),
        )

    def _set_x_limits(self) -> None:
        """Whole trainings on the x axes, as planned: step 0 to the last, epoch 1 to the last
        with half an epoch either side. Autoscaling around the few points of a short run drew
        one epoch from 0.96 to 1.05."""
        planned_steps = [
            curve.epochs * curve.steps_per_epoch or max(curve.loss_steps, default=0)
            for curve in self._curves
        ]
        planned_epochs = [
            curve.epochs or max(curve.dice_epochs, default=0) for curve in self._curves
        ]
        steps, epochs = max(planned_steps, default=0), max(planned_epochs, default=0)
        self.loss_axes.set_xlim(0, max(1, steps))
        self.dice_axes.set_xlim(0.5, max(1, epochs) + 0.5)

    def _draw(self) -> None:
        """Update the lines' data (adding lines for new trainings) and render once."""
        if len(self._lines) > len(self._curves):  # a new run started
            for lines in self._lines:
                for line in lines:
                    line.remove()
            self._lines = []
        for curve in self._curves[len(self._lines) :]:
            (loss_line,) = self.loss_axes.plot([], [], marker=".", ms=3, label=curve.label, lw=1.2)
            (dice_line,) = self.dice_axes.plot(
                [], [], marker="o", ms=3, label=curve.label, lw=1.2, color=loss_line.get_color()
            )
            self._lines.append((loss_line, dice_line))
            self.dice_axes.legend(fontsize=6, loc="upper left")
        for curve, (loss_line, dice_line) in zip(self._curves, self._lines, strict=True):
            loss_line.set_data(curve.loss_steps, curve.losses)
            dice_line.set_data(curve.dice_epochs, curve.dices)
        self.loss_axes.relim()
        self.loss_axes.autoscale_view(scalex=False)
        self._set_x_limits()
        self.canvas.draw_idle()
        self._dirty = False
        self._last_draw = time.monotonic()
        self.draws += 1
