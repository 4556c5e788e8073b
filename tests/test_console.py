"""The command line for people: events drawn as sentences (and bars in a terminal), ``--json``
for programs, aligned tables, and no backend log noise."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from napari_kdseg.cli import main
from napari_kdseg.commands import EXIT_OK, console, training
from napari_kdseg.commands.console import EventConsole, cell_title, format_duration
from napari_kdseg.commands.evaluation import case_table, summary_table
from napari_kdseg.core.events import captured, emit
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.evaluation.evaluate import CaseResult, Evaluation
from napari_kdseg.evaluation.metrics import SegmentationScores

T0 = 1_700_000_000.0

#: What one cell of ``kdseg loso`` streams, as recorded (fields trimmed to those it sends).
LOSO_CELL: list[dict[str, Any]] = [
    {"event": "cell", "time": T0, "number": 3, "cells": 9, "target": "F", "model": "enet",
     "variant": "+AAM + KMM + LM", "teacher": "unetpp", "seed": 1},
    {"event": "warning", "time": T0 + 1, "site": "A",
     "message": "Case07: the mask is empty; the case is left out"},
    {"event": "start", "time": T0 + 2, "epochs": 2, "steps_per_epoch": 4, "initial_epoch": 0,
     "strategy": "default", "replicas": 1, "mixed_precision": False, "backend": "tensorflow",
     "device": "cpu"},
    {"event": "step", "time": T0 + 5, "epoch": 1, "step": 2, "steps": 4, "eta_s": 40.0,
     "learning_rate": 0.01, "dice": 0.2, "loss": 1.5},
    {"event": "step", "time": T0 + 20, "epoch": 1, "step": 4, "steps": 4, "eta_s": 30.0,
     "learning_rate": 0.01, "dice": 0.3, "loss": 1.25},
    {"event": "artifact", "time": T0 + 21, "kind": "best_checkpoint",
     "path": "/runs/F/enet/enet.best.keras", "epoch": 1, "val_dice": 0.41},
    {"event": "epoch", "time": T0 + 21, "epoch": 1, "epochs": 2, "eta_s": 30.0, "dice": 0.3,
     "loss": 1.25, "val_dice": 0.41, "val_loss": 1.3},
    {"event": "step", "time": T0 + 40, "epoch": 2, "step": 2, "steps": 4, "eta_s": 10.0,
     "learning_rate": 0.01, "dice": 0.5, "loss": 0.875},
    {"event": "epoch", "time": T0 + 50, "epoch": 2, "epochs": 2, "eta_s": 0.0, "dice": 0.55,
     "loss": 0.8, "val_dice": 0.39, "val_loss": 1.1},
    {"event": "artifact", "time": T0 + 51, "kind": "model", "path": "/runs/F/enet/enet.keras",
     "card": "/runs/F/enet/enet.json"},
    {"event": "done", "time": T0 + 51, "best_val_dice": 0.41, "seconds": 49.0,
     "optimizer_steps": 8},
    {"event": "cell_done", "time": T0 + 105, "folder": "/runs/F/enet-from-unetpp-AAM-KMM-LM",
     "skipped": False, "mean": 0.7123, "std": 0.0481, "n": 4, "undefined": 0},
    {"event": "report", "time": T0 + 106, "results": "/runs/results.csv",
     "cases": "/runs/cases.csv", "table": "/runs/table2.md", "plot": "/runs/table2.png"},
]  # fmt: skip


def _plain(events: list[dict[str, Any]]) -> list[str]:
    """What the renderer prints for ``events`` where stdout is no terminal."""
    out = io.StringIO()
    renderer = EventConsole(Console(file=out, width=80, force_terminal=False))
    assert not renderer.live
    with renderer:
        for event in events:
            renderer(event)
    return out.getvalue().splitlines()


def test_a_grid_cell_reads_as_sentences() -> None:
    assert _plain(LOSO_CELL) == [
        "3 of 9: ENet distilled from UNet++ with AAM + KMM + LM, unseen site F (seed 1)",
        "Warning: site A: Case07: the mask is empty; the case is left out",
        "Training on cpu (tensorflow): 2 epochs of 4 steps",
        # the first step sets the clock; the next line waits STEP_LINE_INTERVAL_S (30 s)
        "Epoch 1/2: loss 1.250, Dice 0.300, validation Dice 0.410 (best so far), ETA 30 s",
        "  epoch 2/2, step 2/4: loss 0.875, Dice 0.500, ETA 10 s",
        "Epoch 2/2: loss 0.800, Dice 0.550, validation Dice 0.390",
        "Saved the model to /runs/F/enet/enet.keras (model card enet.json)",
        "Trained in 49 s: best validation Dice 0.410 (8 optimisation steps)",
        "  Dice 0.712 ± 0.048 on 4 cases of site F, 1 min 45 s",
        "Report: /runs/table2.md (also /runs/results.csv, /runs/cases.csv, /runs/table2.png)",
    ]


def test_teacher_maps_say_which_scan_is_done() -> None:
    """TAPS takes half a minute a scan before training starts: each one is announced."""
    lines = _plain(
        [
            {"event": "stage_progress", "time": T0, "stage": "teacher maps", "done": 1,
             "total": 2, "case": "prostate3t_dicom/P1"},
            {"event": "stage_progress", "time": T0 + 30, "stage": "teacher maps", "done": 2,
             "total": 2, "case": "prostate3t_dicom/P2"},
            {"event": "stage_done", "time": T0 + 30, "stage": "teacher maps", "path": "/c/maps",
             "seconds": 61.0, "computed": 2, "cached": 0},
        ]
    )  # fmt: skip
    assert lines == [
        "  Teacher maps: 1/2 scans (prostate3t_dicom/P1)",
        "  Teacher maps: 2/2 scans (prostate3t_dicom/P2)",
        "Teacher maps ready in /c/maps (1 min 1 s)",
    ]


def test_stops_reuses_and_unknown_events_are_said_in_words() -> None:
    lines = _plain(
        [
            {"event": "cell", "time": T0, "target": "B", "model": "unetpp", "variant": "teacher"},
            {"event": "cell_done", "time": T0 + 1, "skipped": True, "mean": 0.8, "std": 0.1,
             "n": 1, "undefined": 0},
            {"event": "start", "time": T0 + 2, "epochs": 3, "steps_per_epoch": 5,
             "initial_epoch": 1, "device": "cpu"},
            {"event": "stopped", "time": T0 + 9, "signal": 15, "checkpoint": "/r/resume",
             "epochs_done": 2, "hint": "run the same command again to resume"},
            {"event": "stopped", "time": T0 + 9, "reason": "/r: stopped after B/unetpp"},
            {"event": "exported", "time": T0 + 10, "path": "/lib/enet-unseen-B.onnx",
             "skipped": False, "max_abs_difference": 2.5e-6, "model": "enet",
             "variant": "w/o", "target": "B", "teacher": None},
            {"event": "brand_new", "time": T0 + 11, "answer": 42},
        ]
    )  # fmt: skip
    assert lines == [
        "UNet++ teacher, unseen site B",
        "  Dice 0.800 ± 0.100 on 1 case of site B, finished in an earlier run",
        "Training on cpu: 3 epochs of 5 steps, from epoch 2",
        "Stopped by SIGTERM after 2 of 3 epochs (checkpoint /r/resume): run the same command "
        "again to resume",
        "Stopped: /r: stopped after B/unetpp",
        "ENet alone, unseen site B: exported to /lib/enet-unseen-B.onnx (max |ONNX - Keras| "
        "2.5e-06)",
        "brand_new: answer 42",
    ]


def test_in_a_terminal_bars_follow_the_training_and_go_when_it_ends() -> None:
    out = io.StringIO()
    screen = Console(file=out, width=100, force_terminal=True, force_interactive=True)
    renderer = EventConsole(screen)
    assert renderer.live
    with renderer:
        for event in LOSO_CELL[:5]:
            renderer(event)
        progress = renderer._progress
        assert progress is not None
        bars = {task.description.strip(): task for task in progress.tasks}
        assert bars["epoch 1"].completed == 4
        assert bars["epoch 1"].fields["info"] == "loss 1.250, Dice 0.300, ETA 30 s"
        assert bars["epochs"].total == 2
        assert bars[cell_title(LOSO_CELL[0])].completed == 2  # cells 1 and 2 done
        for event in LOSO_CELL[5:]:
            renderer(event)
        assert [task.description for task in progress.tasks] == [cell_title(LOSO_CELL[0])]
        assert progress.tasks[0].completed == 3
    text = out.getvalue()
    assert "Epoch 1/2: loss 1.250" in text
    assert "Dice 0.712 ± 0.048 on 4 cases of site F" in text


def test_durations_read_like_a_person_says_them() -> None:
    assert format_duration(0.42) == "0.4 s"
    assert format_duration(42) == "42 s"
    assert format_duration(105) == "1 min 45 s"
    assert format_duration(3 * 3600 + 5 * 60 + 7) == "3 h 05 min"
    assert format_duration(None) == "an unknown time"


def _fake_training(args: Any) -> int:
    for event in LOSO_CELL:
        emit(event["event"], **{k: v for k, v in event.items() if k not in ("event", "time")})
    return EXIT_OK


TRAIN_ARGV = ["train", "data", "--out", "runs/x"]


def test_json_prints_the_events_as_they_are_sent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(training, "_train", _fake_training)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with captured() as sent:
        _fake_training(None)
    assert main([*TRAIN_ARGV, "--json"]) == EXIT_OK
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(isinstance(record.pop("time"), float) for record in printed + sent)
    assert printed == sent  # every event, each field as emitted
    assert len(printed) == len(LOSO_CELL)


def test_people_get_sentences_not_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(training, "_train", _fake_training)
    # main quiets TensorFlow through the environment; later tests get theirs back
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    assert main(TRAIN_ARGV) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if line.startswith("{")]
    assert "Trained in 49 s: best validation Dice 0.410 (8 optimisation steps)" in lines
    assert lines[-1].startswith("Report: /runs/table2.md")


def test_every_command_that_streams_events_takes_json_and_the_rest_keep_theirs() -> None:
    from napari_kdseg.cli import _parser

    parser = _parser()
    common = ["data", "--out", "o"]
    for argv in (
        ["train", *common],
        ["distill", *common, "--teacher", "t.keras"],
        ["loso", *common],
        ["ablate", *common],
        ["demo"],
    ):
        assert console.streams_events(parser.parse_args(argv)), argv
        assert not console.streams_events(parser.parse_args([*argv, "--json"])), argv
    evaluate = parser.parse_args(["evaluate", "m.onnx", "data", "--json"])
    assert evaluate.json
    assert not console.streams_events(evaluate)


def test_a_bad_argument_is_one_line_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    missing = tmp_path / "nowhere"
    assert main(["train", str(missing), "--out", str(tmp_path / "o")]) == 2
    captured_output = capsys.readouterr()
    assert captured_output.out == ""
    [line] = captured_output.err.splitlines()
    assert line.startswith("kdseg train: ")
    assert str(missing) in line


def _scores(dice: float, distance: float) -> SegmentationScores:
    return SegmentationScores(dice, distance, distance / 3, 100, 120)


def test_evaluation_tables_keep_long_site_names_apart_from_the_cases() -> None:
    evaluation = Evaluation(
        "m.onnx",
        [
            CaseResult("promise12_case00", "Case00", _scores(0.71234, 3.2), 2.31),
            CaseResult("B", "Case01", _scores(0.0, float("nan")), 1.0),
        ],
    )
    out = io.StringIO()
    screen = Console(file=out, width=80, force_terminal=False)
    screen.print(case_table(evaluation))
    screen.print(summary_table(evaluation))
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert ["promise12_case00", "Case00", "0.712", "3.20", "1.07", "2.3"] in rows
    assert ["B", "Case01", "0.000", "undef.", "undef.", "1.0"] in rows
    assert ["all", "2", "0.356", "±", "0.356", "3.200", "±", "0.000"] in [r[:8] for r in rows]
    assert ["B", "1", "0.000", "±", "0.000", "–", "–", "1"] in rows  # no surface: undefined
    assert max(len(line) for line in out.getvalue().splitlines()) <= 80


@pytest.mark.slow
def test_a_real_training_prints_sentences_and_no_backend_noise(tmp_path: Path) -> None:
    data = generate_phantom(tmp_path / "data", cases_per_site=3, size=48, seed=0, sites="AB")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    command = [sys.executable, "-m", "napari_kdseg", "train", str(data), "--model", "enet"]
    command += ["--width", "0.125", "--size", "32", "--epochs", "1", "--batch-size", "8"]
    command += ["--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "Training on cpu (tensorflow): 1 epoch of 10 steps"
    assert lines[1].startswith("Epoch 1/1: loss ")
    assert "validation Dice" in lines[1]
    assert f"Saved the model to {tmp_path / 'run' / 'enet.keras'} (model card enet.json)" in lines
    assert lines[-1].startswith("Trained in ")
    noise = ("cuda", "onednn", "e0000", "i0000", "absl", "tensorflow binary", "cpu instructions")
    for stream in (result.stdout, result.stderr):
        assert not [line for line in stream.splitlines() if any(n in line.lower() for n in noise)]
    assert result.stderr == ""
