"""Folding a ``kdseg loso`` event stream into the panel's progress, curves and scores."""

from __future__ import annotations

import pytest

from napari_kdseg.jobs.progress import LosoProgress, cell_label, format_seconds

TEACHER = {"target": "C", "model": "unetpp", "variant": "teacher", "teacher": None}
ALONE = {"target": "C", "model": "enet", "variant": "w/o", "teacher": None}
DISTILLED = {"target": "C", "model": "enet", "variant": "+AAM + KMM + LM", "teacher": "unetpp"}


def _train(progress: LosoProgress, number: int, cell: dict, loss: float, dice: float) -> None:
    """One cell's events as the real child streams them (2 epochs of 4 steps, no resume)."""
    progress.apply("cell", {"time": 100.0 * number, "number": number, "cells": 3, **cell})
    progress.apply(
        "start", {"epochs": 2, "steps_per_epoch": 4, "initial_epoch": 0, "device": "cpu"}
    )
    for epoch in (1, 2):
        progress.apply("step", {"epoch": epoch, "step": 4, "steps": 4, "eta_s": 1.0, "loss": loss})
        progress.apply("epoch", {"epoch": epoch, "epochs": 2, "eta_s": 0.0, "val_dice": dice})
    progress.apply("done", {"best_val_dice": dice})
    progress.apply(
        "cell_done", {"folder": "x", "skipped": False, "mean": dice, "std": 0.01, "n": 2}
    )


def test_a_whole_run() -> None:
    progress = LosoProgress()
    assert progress.fraction == 0.0
    progress.apply("cell", {"time": 100.0, "number": 1, "cells": 3, **TEACHER})
    assert progress.stage == "model 1 of 3: UNet++ (teacher), unseen site C: preparing"
    progress.apply(
        "start", {"epochs": 2, "steps_per_epoch": 4, "initial_epoch": 0, "device": "cpu"}
    )
    progress.apply(
        "step", {"time": 100.0, "epoch": 1, "step": 2, "steps": 4, "eta_s": 6.0, "loss": 1.5}
    )
    assert progress.device == "cpu"
    assert progress.fraction == pytest.approx(2 / 8 / 3)
    assert progress.stage_eta_s == 6.0  # the child's, until two steps are timed here
    assert progress.overall_eta_s() is None
    assert progress.stage.endswith("training, epoch 1/2, step 2/4")
    progress.apply("step", {"time": 110.0, "epoch": 1, "step": 4, "steps": 4, "loss": 1.2})
    assert progress.seconds_per_step == pytest.approx(5.0)
    assert progress.stage_eta_s == pytest.approx(4 * 5.0)
    assert progress.overall_eta_s() == pytest.approx((24 - 4) * 5.0)

    progress = LosoProgress()
    for number, cell in enumerate((TEACHER, ALONE, DISTILLED), start=1):
        _train(progress, number, cell, loss=1.0 / number, dice=0.2 * number)
    progress.apply("report", {"time": 1.0, "table": "/run/table2.md"})
    progress.apply("exported", {"path": "/lib/enet-unseen-C.onnx", "model": "enet"})
    progress.apply("future_event", {"anything": 1})

    assert progress.fraction == 1.0
    assert progress.report == {"table": "/run/table2.md"}
    assert progress.exported == ["/lib/enet-unseen-C.onnx"]
    assert [curve.label for curve in progress.curves] == ["UNet++", "ENet alone", "ENet distilled"]
    assert progress.curves[1].loss_steps == [4, 8]
    assert progress.curves[2].dice_epochs == [1, 2]
    rows = [(s.model_name, s.variant_text, s.dice_text) for s in progress.scores]
    assert rows == [
        ("UNet++", "teacher", "0.200 ± 0.010"),
        ("ENet", "alone", "0.400 ± 0.010"),
        ("ENet", "distilled (AAM + KMM + LM)", "0.600 ± 0.010"),
    ]


def test_a_resumed_training_starts_part_way() -> None:
    progress = LosoProgress()
    progress.apply("cell", {"number": 2, "cells": 2, **ALONE})
    progress.apply("resumed", {"epochs_done": 3, "checkpoint": "resume/"})
    assert progress.stage.endswith("resuming after epoch 3")
    progress.apply("start", {"epochs": 4, "steps_per_epoch": 10, "initial_epoch": 3})
    assert progress.fraction == pytest.approx((1 + 3 / 4) / 2)


def test_an_empty_prediction_has_no_dice_mean() -> None:
    progress = LosoProgress()
    progress.apply("cell", {"number": 1, "cells": 1, **TEACHER})
    progress.apply("cell_done", {"mean": None, "std": None, "n": 2, "undefined": 2})
    assert progress.scores[0].dice_text == "–"
    assert progress.scores[0].undefined == 2


def test_labels_and_durations() -> None:
    assert cell_label(DISTILLED) == "ENet distilled from UNet++ (AAM + KMM + LM)"
    assert format_seconds(None) == "–"
    assert format_seconds(42.4) == "42 s"
    assert format_seconds(200) == "3 min 20 s"
    assert format_seconds(3900) == "1 h 05 min"


def test_a_single_training_without_cells() -> None:
    """``kdseg distill`` (the panel's run from TAPS) streams no cell events."""
    progress = LosoProgress()
    progress.apply(
        "stage_progress", {"stage": "teacher maps", "done": 2, "total": 3, "case": "real/P1"}
    )
    assert progress.stage == "training: teacher maps, scan 2 of 3"
    progress.apply("stage_done", {"stage": "teacher maps", "computed": 3, "cached": 0})
    assert progress.stage == "training: teacher maps ready"
    progress.apply("start", {"time": 10.0, "epochs": 2, "initial_epoch": 0, "device": "cpu"})
    progress.apply("step", {"epoch": 1, "step": 2, "steps": 4, "loss": 0.5})
    assert progress.fraction == pytest.approx(0.25)
    assert progress.stage == "training: training, epoch 1/2, step 2/4"
    progress.apply("epoch", {"epoch": 2, "epochs": 2, "val_dice": 0.5})
    progress.apply("done", {"best_val_dice": 0.5})
    assert progress.fraction == 1.0
    assert progress.stage == "training done; exporting the student"
    progress.apply("exported", {"path": "/library/enet-from-taps.onnx"})
    assert progress.exported == ["/library/enet-from-taps.onnx"]
    assert progress.curves[0].dices == [0.5]


def test_progress_counts_optimisation_steps_across_the_job_and_times_them() -> None:
    """Trainings of different lengths weigh by their steps, not a third each; a training
    not started yet is assumed as long as the current one; the ETA is the steps left times
    the measured seconds per step (compiling before the first step not counted)."""
    progress = LosoProgress()
    progress.apply("cell", {"time": 0.0, "number": 1, "cells": 3, **TEACHER})
    progress.apply("cell_done", {"skipped": True, "mean": 0.5, "std": 0.1, "n": 2})
    assert progress.fraction == pytest.approx(1 / 3)  # no training has a length yet

    progress.apply("cell", {"time": 1.0, "number": 2, "cells": 3, **ALONE})
    progress.apply("start", {"time": 1.0, "epochs": 3, "steps_per_epoch": 4, "initial_epoch": 0})
    assert progress.fraction == pytest.approx(12 / 36)  # the skipped teacher assumed 12 too
    progress.apply("step", {"time": 50.0, "epoch": 1, "step": 2, "steps": 4})  # after compiling
    progress.apply("step", {"time": 54.0, "epoch": 1, "step": 4, "steps": 4})
    progress.apply("epoch", {"time": 60.0, "epoch": 1, "epochs": 3, "val_dice": 0.3})
    progress.apply("step", {"time": 62.0, "epoch": 2, "step": 2, "steps": 4})
    assert progress.seconds_per_step == pytest.approx(12.0 / 4)  # validation time included
    assert progress.fraction == pytest.approx((12 + 6) / 36)
    assert progress.stage_eta_s == pytest.approx(6 * 3.0)
    assert progress.overall_eta_s() == pytest.approx(18 * 3.0)
    for epoch in (2, 3):
        progress.apply("step", {"epoch": epoch, "step": 4, "steps": 4})
    progress.apply("done", {"best_val_dice": 0.4})
    assert progress.fraction == pytest.approx(24 / 36)
    progress.apply("cell_done", {"skipped": False, "mean": 0.4, "std": 0.1, "n": 2})

    # a shorter last training: the total follows what each training reports, and the
    # skipped one is now assumed as long as the current
    progress.apply("cell", {"time": 100.0, "number": 3, "cells": 3, **DISTILLED})
    progress.apply("start", {"time": 100.0, "epochs": 1, "steps_per_epoch": 4, "initial_epoch": 0})
    assert progress.fraction == pytest.approx((4 + 12) / 20)  # skipped: assumed 4 now
    assert progress.overall_eta_s() == pytest.approx(4 * 3.0)  # the last training's rate
    progress.apply("step", {"time": 120.0, "epoch": 1, "step": 2, "steps": 4})
    progress.apply("step", {"time": 122.0, "epoch": 1, "step": 4, "steps": 4})
    assert progress.seconds_per_step == pytest.approx(1.0)
    assert progress.fraction == 1.0
    assert progress.overall_eta_s() == 0.0


def test_a_resumed_training_keeps_its_curve_up_to_the_checkpoint() -> None:
    """A job cancelled in epoch 2 and started again (a new progress given the old curves):
    the resumed cell goes on with its curve, minus the points after its checkpoint."""
    first = LosoProgress()
    first.apply("cell", {"number": 1, "cells": 2, **TEACHER})
    first.apply("start", {"epochs": 2, "steps_per_epoch": 4, "initial_epoch": 0})
    for step, loss in ((2, 0.9), (4, 0.8)):
        first.apply("step", {"epoch": 1, "step": step, "steps": 4, "loss": loss})
    first.apply("epoch", {"epoch": 1, "epochs": 2, "val_dice": 0.3})
    first.apply("step", {"epoch": 2, "step": 2, "steps": 4, "loss": 0.7})  # after the checkpoint
    first.apply("stopped", {"epochs_done": 1})

    again = LosoProgress(curves=first.curves)
    again.apply("cell", {"number": 1, "cells": 2, **TEACHER})
    again.apply("resumed", {"epochs_done": 1, "checkpoint": "resume/"})
    assert again.curves[0].losses == [0.9, 0.8, 0.7]  # a resumed event clears nothing
    again.apply("start", {"epochs": 2, "steps_per_epoch": 4, "initial_epoch": 1})
    again.apply("step", {"epoch": 2, "step": 2, "steps": 4, "loss": 0.6})
    again.apply("epoch", {"epoch": 2, "epochs": 2, "val_dice": 0.5})

    assert len(again.curves) == 1
    (curve,) = again.curves
    assert (curve.loss_steps, curve.losses) == ([2, 4, 6], [0.9, 0.8, 0.6])
    assert (curve.dice_epochs, curve.dices) == ([1, 2], [0.3, 0.5])
    assert again.curve is curve
    # the next cell, trained from scratch, gets a curve of its own
    again.apply("cell", {"number": 2, "cells": 2, **ALONE})
    again.apply("start", {"epochs": 2, "steps_per_epoch": 4, "initial_epoch": 0})
    again.apply("step", {"epoch": 1, "step": 2, "steps": 4, "loss": 1.1})
    assert [c.label for c in again.curves] == ["UNet++", "ENet alone"]
    assert again.curves[1].losses == [1.1]
