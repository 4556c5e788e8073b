"""Fault injection: a training process killed outright (SIGKILL, as by the OOM killer or a
crash) at a random step resumes from its last checkpoint and ends with exactly the optimisation
steps of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import napari_kdseg.models  # noqa: F401  (registers the custom layers for loading)
from napari_kdseg.data.phantom import generate_phantom

EPOCHS = 3


def _command(data: Path, out: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "napari_kdseg",
        "train",
        str(data),
        "--model",
        "enet",
        "--width",
        "0.125",
        "--size",
        "32",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
        "--seed",
        "0",
        "--progress-every",
        "1",
        "--json",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    ]


def _events(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.slow
def test_killed_at_a_random_step_resumes_to_the_same_step_count(tmp_path: Path) -> None:
    data = generate_phantom(tmp_path / "data", cases_per_site=3, size=48, seed=0, sites="AB")
    cache = tmp_path / "cache"
    kill_at: int | None = None
    out = tmp_path / "killed"
    process = subprocess.Popen(
        _command(data, out, cache), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "start":
            steps_per_epoch = event["steps_per_epoch"]
            # An uninterrupted run takes exactly this many (test_runs checks its card).
            total = EPOCHS * steps_per_epoch
            # Any step but the last; KDSEG_KILL_AT replays a failure's step.
            kill_at = int(os.environ.get("KDSEG_KILL_AT") or random.randint(1, total - 1))
        if event.get("event") == "step":
            done = (event["epoch"] - 1) * steps_per_epoch + event["step"]
            if kill_at is not None and done >= kill_at:
                process.send_signal(signal.SIGKILL)  # no handler, no cleanup: a hard crash
                break
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "enet.keras").exists(), f"killed at step {kill_at} of {total}"
    # What a kill during a save leaves: a temporary sibling, never a half-written final name.
    (out / ".enet.keras.k1ll3d.tmp.keras").write_bytes(b"half-written")

    resumed = subprocess.run(
        _command(data, out, cache), capture_output=True, text=True, check=False
    )
    assert resumed.returncode == 0, f"killed at step {kill_at}: {resumed.stderr[-2000:]}"
    events = _events(resumed.stdout.splitlines())
    # Checkpoints are per epoch; the child may run a little past the step that was read.
    finished_epochs = (kill_at - 1) // steps_per_epoch
    if events[0]["event"] == "resumed":
        assert finished_epochs <= events[0]["epochs_done"] < EPOCHS
    else:
        assert finished_epochs == 0, f"killed at step {kill_at}: the checkpoint was not used"
    card = json.loads((out / "enet.json").read_text())
    assert card["training"]["optimizer_steps"] == total, f"killed at step {kill_at} of {total}"
    assert keras.saving.load_model(out / "enet.keras", compile=False).name == "enet"
    leftovers = [p.name for p in out.rglob(".*.tmp*")]
    assert not leftovers, f"temporary files left behind after the resume: {leftovers}"
