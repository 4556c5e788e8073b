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
    assert progress.stage == "cell 1/3: UNet++ (teacher) on target C: preparing"
    progress.apply(
        "start", {"epochs": 2, "steps_per_epoch": 4, "initial_epoch": 0, "device": "cpu"}
    )
    progress.apply("step", {"epoch": 1, "step": 2, "steps": 4, "eta_s": 6.0, "loss": 1.5})
    assert progress.device == "cpu"
    assert progress.fraction == pytest.approx(2 / 8 / 3)
    assert progress.stage_eta_s == 6.0
    assert progress.stage.endswith("training, epoch 1/2, step 2/4")
    assert progress.overall_eta_s(now=110.0) == pytest.approx(10.0 / (1 / 12) * (11 / 12))

    progress = LosoProgress()
    for number, cell in enumerate((TEACHER, ALONE, DISTILLED), start=1):
        _train(progress, number, cell, loss=1.0 / number, dice=0.2 * number)
    progress.apply("report", {"time": 1.0, "table": "/run/table2.md"})
    progress.apply("exported", {"path": "/lib/enet-unseen-C.onnx", "model": "enet"})
    progress.apply("future_event", {"anything": 1})

    assert progress.fraction == 1.0
    assert progress.report == {"table": "/run/table2.md"}
    assert progress.exported == ["/lib/enet-unseen-C.onnx"]
    assert [curve.label for curve in progress.curves] == ["UNet++", "ENet w/o", "ENet w/"]
    assert progress.curves[1].loss_steps == [4, 8]
    assert progress.curves[2].dice_epochs == [1, 2]
    rows = [(s.model_name, s.variant_text, s.dice_text) for s in progress.scores]
    assert rows == [
        ("UNet++", "teacher", "0.200 ± 0.010"),
        ("ENet", "w/o", "0.400 ± 0.010"),
        ("ENet", "w/ +AAM + KMM + LM", "0.600 ± 0.010"),
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
    assert cell_label(DISTILLED) == "ENet w/ +AAM + KMM + LM from UNet++"
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
