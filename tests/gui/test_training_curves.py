"""The panel's training curves: sane axes for a short run, and curves kept across a resume."""

from __future__ import annotations

from typing import Any

from napari_kdseg._widgets.curves import TrainingCurves
from napari_kdseg.jobs.progress import LosoProgress


def _visible_ticks(axes: Any) -> list[float]:
    low, high = axes.get_xlim()
    return [tick for tick in axes.get_xticks() if low <= tick <= high]


def _one_epoch(progress: LosoProgress) -> None:
    """A one-epoch training of 4 steps, as the child streams it."""
    progress.apply("cell", {"number": 1, "cells": 1, "target": "C", "model": "enet"})
    progress.apply("start", {"epochs": 1, "steps_per_epoch": 4, "initial_epoch": 0})
    for step, loss in ((2, 0.9), (4, 0.8)):
        progress.apply("step", {"epoch": 1, "step": step, "steps": 4, "loss": loss})
    progress.apply("epoch", {"epoch": 1, "epochs": 1, "val_dice": 0.4})


def test_a_one_epoch_run_has_whole_epochs_and_steps_on_its_x_axes(qtbot: Any) -> None:
    curves = TrainingCurves()
    qtbot.addWidget(curves)
    progress = LosoProgress()
    _one_epoch(progress)
    curves.show_curves(progress.curves)
    assert curves.redraw_if_due(force=True)

    assert curves.dice_axes.get_xlim() == (0.5, 1.5)  # not 0.96 to 1.05 around one point
    assert _visible_ticks(curves.dice_axes) == [1.0]
    assert curves.loss_axes.get_xlim() == (0.0, 4.0)  # the whole training's steps
    assert all(tick == int(tick) for tick in _visible_ticks(curves.loss_axes))


def test_a_resumed_training_keeps_the_lines_drawn_before(qtbot: Any) -> None:
    curves = TrainingCurves()
    qtbot.addWidget(curves)
    first = LosoProgress()
    _one_epoch(first)
    curves.show_curves(first.curves)
    curves.redraw_if_due(force=True)

    again = LosoProgress(curves=first.curves)  # the panel restarting the same run folder
    again.apply("cell", {"number": 1, "cells": 1, "target": "C", "model": "enet"})
    again.apply("resumed", {"epochs_done": 1})
    curves.show_curves(again.curves)
    curves.redraw_if_due(force=True)

    assert curves.points == (2, 1)
    ((loss_line, dice_line),) = curves._lines
    assert list(loss_line.get_ydata()) == [0.9, 0.8]
    assert list(dice_line.get_ydata()) == [0.4]
