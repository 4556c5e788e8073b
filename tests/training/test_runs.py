"""End-to-end runs on a tiny phantom: a teacher, a baseline student and a distilled student."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from napari_kdseg.card import ModelFileError
from napari_kdseg.core.events import Event, captured
from napari_kdseg.data.augment import AugmentConfig
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.data.preprocess import PreprocessConfig
from napari_kdseg.training.config import TrainConfig
from napari_kdseg.training.run import FinishedModelError, RunOptions, RunResult, distill, train

pytestmark = pytest.mark.slow  # trains or exports models: scheduled first (conftest)

TINY = TrainConfig(
    width=0.125,
    preprocess=PreprocessConfig(size=32, context=3),
    epochs=2,
    batch_size=8,
    learning_rate=3e-3,
    cycle_step_size=20,
    augment=AugmentConfig(),
    validation_fraction=0.34,
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "data"
    return generate_phantom(root, cases_per_site=3, size=48, seed=0, sites="AB")


@pytest.fixture(scope="module")
def teacher(phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    config = TrainConfig(**{**TINY.__dict__, "model": "unetpp"})
    options = RunOptions(PreprocessCache(out / "cache"))
    result = train(discover(phantom), ["A", "B"], config, out, options)
    return result.model_path


def test_teacher_run_writes_model_card_and_logs(teacher: Path) -> None:
    out = teacher.parent
    model = keras.saving.load_model(teacher, compile=False)
    assert model.name == "unetpp"
    assert model.input_shape == (None, 32, 32, 3)
    card = json.loads((out / "unetpp.json").read_text())
    assert card["architecture"] == "unetpp"
    assert card["training_sites"] == ["A", "B"]
    assert card["input"] == {
        "size": 32,
        "channels": 3,
        "layout": "NHWC, channels are neighbouring slices centred on the predicted one",
    }
    assert card["teacher"] is None
    assert 0.0 <= card["metrics"]["best_val_dice"] <= 1.0
    training = card["training"]
    assert training["optimizer_steps"] == 2 * training["steps_per_epoch"]  # every epoch, whole
    with (out / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert {"loss", "dice", "val_loss", "val_dice"} <= set(rows[0])


@pytest.fixture(scope="module")
def distilled(
    phantom: Path, teacher: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, list[Event]]:
    """A tiny distillation with every loss on, and the events it sent."""
    out = tmp_path_factory.mktemp("distilled")
    with captured() as events:
        result = distill(
            discover(phantom), ["A", "B"], TINY, teacher, out, RunOptions(PreprocessCache(out))
        )
    return result, events


def test_distilled_student_with_all_losses(
    teacher: Path, distilled: tuple[RunResult, list[Event]]
) -> None:
    result, events = distilled
    student = keras.saving.load_model(result.model_path, compile=False)
    assert student.name == "enet"
    assert student.count_params() < 10_000, "the student is saved alone, without the teacher"
    history = result.history
    for term in ("segmentation", "logits", "kernel_matrix", "affinity", "dice", "val_dice"):
        assert term in history, term
        assert all(np.isfinite(history[term]))
    card = json.loads(result.card_path.read_text())
    assert card["teacher"] == str(teacher)
    assert card["losses"] == {
        "segmentation": "dice+ce",
        "logits": 0.2,
        "kernel_matrix": 0.9,
        "affinity": 0.9,
    }
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start"
    assert kinds[-1] == "done"
    assert kinds.count("epoch") == 2
    epoch = next(e for e in events if e["event"] == "epoch")
    assert {"affinity", "kernel_matrix", "logits", "eta_s", "val_dice"} <= set(epoch)


def test_the_same_seed_gives_the_same_student_exactly(
    phantom: Path, teacher: Path, distilled: tuple[RunResult, list[Event]], tmp_path: Path
) -> None:
    """Same command, same seed: the same weights and metrics to the last bit (on the CPU)."""
    first, _ = distilled
    with captured():
        again = distill(
            discover(phantom), ["A", "B"], TINY, teacher, tmp_path, RunOptions(PreprocessCache())
        )
    assert again.history == first.history
    weights = [
        keras.saving.load_model(path, compile=False).get_weights()
        for path in (first.model_path, again.model_path)
    ]
    for one, other in zip(*weights, strict=True):
        np.testing.assert_array_equal(one, other)


def test_distill_cli_streams_json_lines(phantom: Path, teacher: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "napari_kdseg.cli",
        "distill",
        str(phantom),
        "--teacher",
        str(teacher),
        "--model",
        "erfnet",
        "--width",
        "0.125",
        "--size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--losses",
        "affinity",
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "start"
    assert events[0]["device"] == "cpu"
    assert events[-1]["event"] == "done"
    card = json.loads((tmp_path / "run" / "erfnet.json").read_text())
    assert card["losses"] == {"segmentation": "dice+ce", "affinity": 0.1}  # the CPU preset's
    # The same command again would replace the finished model: refused, nothing touched.
    model = tmp_path / "run" / "erfnet.keras"
    before = model.stat().st_mtime_ns
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 2
    assert "erfnet.keras: a finished model is already here" in again.stderr
    assert "--overwrite" in again.stderr
    assert model.stat().st_mtime_ns == before


def test_a_finished_model_is_replaced_only_when_asked(phantom: Path, teacher: Path) -> None:
    config = TrainConfig(**{**TINY.__dict__, "model": "unetpp"})
    before = teacher.stat().st_mtime_ns
    with pytest.raises(FinishedModelError, match=r"unetpp\.keras: a finished model is already"):
        train(discover(phantom), ["A", "B"], config, teacher.parent)
    assert teacher.stat().st_mtime_ns == before
    assert not list(teacher.parent.glob(".*.tmp*"))


def test_teacher_grid_mismatch_is_explained(phantom: Path, teacher: Path, tmp_path: Path) -> None:
    config = TrainConfig(**{**TINY.__dict__, "preprocess": PreprocessConfig(size=48, context=3)})
    with pytest.raises(
        ModelFileError, match=r"teacher input \(None, 32, 32, 3\) does not match the card's"
    ):
        distill(discover(phantom), ["A"], config, teacher, tmp_path)


def _events(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_cancelled_distillation_resumes_with_the_same_step_count(
    phantom: Path, teacher: Path, tmp_path: Path
) -> None:
    """SIGTERM mid-run stops at a step boundary; the same command resumes and finishes."""
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "napari_kdseg.cli",
        "distill",
        str(phantom),
        "--teacher",
        str(teacher),
        "--model",
        "espnet",
        "--width",
        "0.125",
        "--size",
        "32",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if '"event": "epoch"' in line:
            process.send_signal(signal.SIGTERM)
            break
    seen += process.stdout.readlines()
    assert process.wait(timeout=600) == 3
    first = _events(seen)
    assert first[-1]["event"] == "stopped"
    steps_per_epoch = first[0]["steps_per_epoch"]
    done = first[-1]["epochs_done"]
    assert 1 <= done < 3
    assert not (out / "espnet.keras").exists(), "a cancelled run leaves no final model"

    resumed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    second = _events(resumed.stdout.splitlines())
    assert second[0] == {**second[0], "event": "resumed", "epochs_done": done}
    assert [e["epoch"] for e in second if e["event"] == "epoch"] == list(range(done + 1, 4))
    card = json.loads((out / "espnet.json").read_text())
    assert card["training"]["optimizer_steps"] == 3 * steps_per_epoch
    assert not (out / "resume").exists()
    with (out / "log.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]


def test_mirrored_strategy_over_two_logical_cpus(
    phantom: Path, teacher: Path, tmp_path: Path
) -> None:
    """The multi-device path: MirroredStrategy with the CPU split into two logical devices."""
    command = [
        sys.executable,
        "-m",
        "napari_kdseg.cli",
        "distill",
        str(phantom),
        "--teacher",
        str(teacher),
        "--model",
        "espnet",
        "--width",
        "0.125",
        "--size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--strategy",
        "mirrored",
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
    ]
    environment = {**os.environ, "KDSEG_LOGICAL_CPUS": "2"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    events = _events(result.stdout.splitlines())
    assert events[0]["strategy"] == "mirrored"
    assert events[0]["replicas"] == 2
    epoch = next(e for e in events if e["event"] == "epoch")
    for term in ("loss", "segmentation", "logits", "kernel_matrix", "affinity"):
        assert np.isfinite(epoch[term]), term
    card = json.loads((tmp_path / "run" / "espnet.json").read_text())
    assert card["training"]["placement"] == {
        "strategy": "mirrored",
        "replicas": 2,
        "mixed_precision": False,
    }
