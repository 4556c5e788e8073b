"""``--strategy multi-worker`` for real: two ``kdseg train`` processes on localhost.

Each worker gets its own ``TF_CONFIG`` (same cluster, its own task index), its own ``--out``
and its own ``TMPDIR``. Worker 0 is the chief: it alone writes the model, card, log and
checkpoints and streams JSON lines; worker 1 runs the same steps and saves (saves are
collectives) into a scratch folder that it removes. The batch size is global: each step
splits one batch of ``--batch-size`` slices between the workers, so an epoch has as many
steps as on one worker.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from napari_kdseg.data.phantom import generate_phantom

pytestmark = pytest.mark.slow  # trains or exports models: scheduled first (conftest)

TIMEOUT_S = 300
BATCH = 8


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _run_workers(data: Path, tmp_path: Path) -> tuple[list[int], list[tuple[str, str]]]:
    """``kdseg train --strategy multi-worker`` as two local workers, each with its own
    ``--out`` (``worker0`` is the chief's); their exit statuses and (stdout, stderr)."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        scratch_root = tmp_path / f"tmp{index}"
        scratch_root.mkdir(exist_ok=True)
        environment = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "TMPDIR": str(scratch_root),
        }
        command = [
            sys.executable,
            "-m",
            "napari_kdseg.cli",
            "train",
            str(data),
            "--model",
            "espnet",
            "--size",
            "32",
            "--width",
            "0.125",
            "--epochs",
            "1",
            "--batch-size",
            str(BATCH),
            "--strategy",
            "multi-worker",
            "--json",
            "--out",
            str(tmp_path / f"worker{index}"),
            "--cache-dir",
            str(tmp_path / f"cache{index}"),
        ]
        processes.append(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
            )
        )
    outputs: list[tuple[str, str]] = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT_S))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        tails = [process.communicate()[1][-3000:] for process in processes]
        raise AssertionError(
            f"the workers did not finish in {TIMEOUT_S} s\n"
            + "\n".join(f"--- worker {i} stderr:\n{tail}" for i, tail in enumerate(tails))
        ) from None
    return [process.returncode for process in processes], outputs


def test_two_workers_train_one_model_written_by_the_chief(tmp_path: Path) -> None:
    data = generate_phantom(tmp_path / "data", cases_per_site=3, size=48, seed=0, sites="AB")
    codes, outputs = _run_workers(data, tmp_path)
    for index, (code, (_, stderr)) in enumerate(zip(codes, outputs, strict=True)):
        assert code == 0, f"worker {index}:\n{stderr[-3000:]}"

    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    events = _events(outputs[0][0])
    assert events[0]["event"] == "start"
    assert events[0]["strategy"] == "multi-worker"
    assert events[0]["replicas"] == 2
    assert events[0]["workers"] == 2
    assert events[-1]["event"] == "done"
    assert _events(outputs[1][0]) == [], "only the chief streams progress"

    card = json.loads((chief / "espnet.json").read_text())
    assert card["training"]["placement"] == {
        "strategy": "multi-worker",
        "replicas": 2,
        "mixed_precision": False,
        "workers": 2,
    }
    # One optimizer step per global batch: the two workers step together, not one each.
    steps = card["training"]["steps_per_epoch"]
    assert steps == events[0]["steps_per_epoch"]
    assert card["training"]["optimizer_steps"] == steps
    assert {p.name for p in chief.iterdir()} >= {"espnet.keras", "espnet.json", "log.csv"}
    assert not (chief / "resume").exists()
    assert not other.exists(), "the other worker writes nothing into its --out"
    assert list((tmp_path / "tmp1").glob("kdseg-worker*")) == [], "its scratch is removed"

    model = keras.saving.load_model(chief / "espnet.keras", compile=False)
    prediction = model.predict(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), verbose=0)
    assert prediction.shape == (2, 32, 32, 2)
    assert np.isfinite(prediction).all()
    assert math.isfinite(card["metrics"]["final"]["loss"])

    # Again: now only the chief's --out holds a finished model. Every worker must reach the
    # same verdict (a lone one would wait for the others' collectives forever): both refuse.
    model_time = (chief / "espnet.keras").stat().st_mtime_ns
    codes, outputs = _run_workers(data, tmp_path)
    assert codes == [2, 2], [stderr[-2000:] for _, stderr in outputs]
    for _, stderr in outputs:
        assert "some workers find a finished model here and others do not" in stderr
    assert (chief / "espnet.keras").stat().st_mtime_ns == model_time
