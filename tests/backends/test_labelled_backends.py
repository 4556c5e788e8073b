"""Loss_Seg from labelled samples only, with a teacher read from the batch, computes the same
on every installed backend (``labelled_step.py`` runs in a child per backend)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("labelled_step.py")


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_labelled_only_segmentation_on_each_backend(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{backend} run failed:\n{result.stderr[-6000:]}"
    assert f"{backend} ok" in result.stdout
