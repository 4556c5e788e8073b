"""Under tf.distribute every replica's loss is its share: two devices report the loss and take
the step that one device takes on the same data (a scalar batch loss once counted twice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds and steps models in a child: scheduled first (conftest)


def test_two_replicas_report_and_step_like_one_device() -> None:
    script = Path(__file__).with_name("replica_losses.py")
    environment = {**os.environ, "KDSEG_LOGICAL_CPUS": "2"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=False, env=environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.splitlines()[-1])
    assert measured["replicas"] == 2
    for name, single in measured["single"].items():
        assert measured["mirrored"][name] == pytest.approx(single, rel=1e-4), name
