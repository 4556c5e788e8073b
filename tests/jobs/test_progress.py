"""Folding a ``kdseg loso`` event stream into the panel's progress, curves and scores."""

from __future__ import annotations

import re

import pytest

from napari_kdseg.jobs.progress import (
    ExportedModel,
    LosoProgress,
    cell_label,
    distilled_words,
    format_seconds,
    paper_cell_label,
)

TEACHER = {"target": "C", "model": "unetpp", "variant": "teacher", "teacher": None}
ALONE = {"target": "C", "model": "enet", "variant": "w/o", "teacher": None}
DISTILLED = {"target": "C", "model": "enet", "variant": "+AAM + KMM + LM", "teacher": "unetpp"}
#: The paper's names and file paths, which the panel keeps for tooltips and the raw log.
PAPERS_NAMES_OR_PATHS = re.compile(r"\b(LM|KMM|AAM)\b|\bw/|\.onnx|\.md\b|/lib/|/run/")


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
    assert progress.stage_details == "report: /run/table2.md"
    for cell, name in (
        (ALONE, "enet-unseen-C"),
        (DISTILLED, "enet-from-unetpp-AAM-KMM-LM-unseen-C"),
    ):
        progress.apply("exported", {"path": f"/lib/{name}.onnx", "skipped": False, **cell})
    progress.apply("future_event", {"anything": 1})

    assert progress.fraction == 1.0
    assert progress.report == {"table": "/run/table2.md"}
    assert progress.exported == [
        ExportedModel("/lib/enet-unseen-C.onnx", "ENet alone, unseen site C"),
        ExportedModel(
            "/lib/enet-from-unetpp-AAM-KMM-LM-unseen-C.onnx",
            "ENet distilled from UNet++ (all three ways), unseen site C",
        ),
    ]
    assert progress.stage == (
        "saved for segmentation: ENet distilled from UNet++ (all three ways), unseen site C"
    )
    assert progress.stage_details == (
        "ENet w/ +AAM + KMM + LM, teacher UNet++: /lib/enet-from-unetpp-AAM-KMM-LM-unseen-C.onnx"
    )
    assert [curve.label for curve in progress.curves] == ["UNet++", "ENet alone", "ENet distilled"]
    assert progress.curves[1].loss_steps == [4, 8]
    assert progress.curves[2].dice_epochs == [1, 2]
    rows = [(s.model_name, s.variant_text, s.dice_text) for s in progress.scores]
    assert rows == [
        ("UNet++", "teacher", "0.200 ± 0.010"),
        ("ENet", "alone", "0.400 ± 0.010"),
        ("ENet", "distilled (all three ways)", "0.600 ± 0.010"),
    ]
    assert [s.paper_variant for s in progress.scores] == ["teacher", "w/o", "w/ +AAM + KMM + LM"]


def test_what_the_panel_shows_is_in_words_and_the_papers_names_are_in_the_details() -> None:
    """The stage line and the log's sentences of a whole run carry neither the paper's names
    nor file paths; the stage's details (a tooltip) name the paper's variant and the file."""
    progress = LosoProgress()
    shown: list[str] = []
    details: list[str] = []
    events = [("cell", {"number": 1, "cells": 1, **DISTILLED})]
    events += [("start", {"epochs": 1, "steps_per_epoch": 2, "initial_epoch": 0})]
    events += [("step", {"epoch": 1, "step": 2, "steps": 2, "loss": 0.5})]
    events += [("epoch", {"epoch": 1, "epochs": 1, "val_dice": 0.5}), ("done", {})]
    events += [("cell_done", {"mean": 0.5, "std": 0.1, "n": 2})]
    events += [("report", {"table": "/run/table2.md"})]
    path = "/lib/enet-from-unetpp-AAM-KMM-LM-unseen-C.onnx"
    events += [("exported", {"path": path, **DISTILLED})]
    for name, fields in events:
        sentence = progress.apply(name, fields)
        shown += [progress.stage, *([sentence] if sentence else [])]
        details.append(progress.stage_details)
    shown += [score.variant_text for score in progress.scores]
    shown += [saved.label for saved in progress.exported]

    assert [text for text in shown if PAPERS_NAMES_OR_PATHS.search(text)] == []
    assert sentence == (  # the exported event's
        "Saved ENet distilled from UNet++ (all three ways), unseen site C to the model "
        "library; the Segmentation panel lists it."
    )
    assert details[0] == "ENet w/ +AAM + KMM + LM, teacher UNet++, target site C"
    assert details[-1].endswith(f": {path}")


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
    assert cell_label(DISTILLED) == "ENet distilled from UNet++ (all three ways)"
    assert cell_label(TEACHER) == "UNet++ (teacher)"
    assert cell_label(ALONE) == "ENet alone"
    assert paper_cell_label(DISTILLED) == "ENet w/ +AAM + KMM + LM, teacher UNet++"
    assert paper_cell_label(ALONE) == "ENet w/o"
    from_taps = {"model": "enet", "variant": "teacher labels +AAM + LM", "teacher": "taps"}
    assert cell_label(from_taps) == (
        "ENet distilled from TAPS (learning its masks, matching its predictions and pixel "
        "neighbours)"
    )
    # the setup's words for what the student matched, in the setup's order
    assert distilled_words("+KMM + LM + AAM") == "all three ways"
    assert distilled_words("+AAM + LM") == "matching its predictions and pixel neighbours"
    assert distilled_words("+KMM") == "matching its inner features"
    assert distilled_words("teacher labels") == "learning its masks"
    assert distilled_words("+NEW + LM") == "matching its predictions and NEW"  # no words: its name
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
    assert progress.stage == "training done; saving the student for segmentation"
    # kdseg distill's event: no target, the teacher by its spec
    exported = {"path": "/library/enet-from-taps.onnx", "model": "enet", "variant": "+AAM + LM"}
    sentence = progress.apply("exported", {**exported, "teacher": "taps"})
    label = "ENet distilled from TAPS (matching its predictions and pixel neighbours)"
    assert progress.exported == [ExportedModel("/library/enet-from-taps.onnx", label)]
    assert sentence == f"Saved {label} to the model library; the Segmentation panel lists it."
    # an event that does not say what it saved: the file's name
    progress.apply("exported", {"path": "/library/student.onnx"})
    assert progress.exported[-1].label == "student.onnx"
    assert progress.stage_details == "/library/student.onnx"
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
