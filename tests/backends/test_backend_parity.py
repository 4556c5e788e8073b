"""The five architectures and the Distiller compute and train the same on JAX and PyTorch as on
TensorFlow: Keras 3 layers and ``keras.ops`` only, as the models package promises.

``backend_steps.py`` runs once per backend, each in its own process (``KERAS_BACKEND`` is
fixed when Keras is imported): first TensorFlow, which saves the initial weights, then each
other installed backend, which loads them. Backends that are not installed are skipped.
What is compared, and why the training-mode step of two architectures is compared only in
direction, is in that script's docstring.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backend_steps import CHAOTIC_IN_TRAINING

from napari_kdseg.models import MODEL_NAMES

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("backend_steps.py")
OTHER_BACKENDS = ("jax", "torch")

# Tolerances, each well above what the backends were measured to differ by (float32 rounding
# in a different order) and well below what a wrong or missing gradient gives (order 1).
LOGITS_ATOL = 1e-5  # measured <= 1.5e-6 on logits of order 1
LOSS_RTOL = 1e-3  # measured <= 5e-5
DICE_ATOL = 0.01  # an arg-max count: measured up to 2.4e-3 (a few pixels of 2048 flip)
STEP_RTOL = 0.05  # per variable, training mode: measured <= 9e-3
FROZEN_STEP_RTOL = 2e-3  # per variable, batch norm frozen: measured <= 2.4e-4
STATISTICS_RTOL = 0.01  # batch-norm moving statistics: measured <= 5e-4
# a chaotic model's whole training-mode update (CHAOTIC_IN_TRAINING): measured 1 - cosine
# <= 2.4e-3 and size within 1 %; DeepLabV3+ with no gradient through its image pooling gives
# 1 - cosine = 0.23
DIRECTION_ATOL = 0.05
SIZE_RTOL = 0.1
FLOOR = 1e-3  # variables that moved less than this x the largest move compare against it


def _run(backend: str, folder: Path, mode: str) -> dict[str, np.ndarray]:
    # XLA's backend optimisations only cost compile time at these sizes (JAX compiles every
    # train step; with them on, the JAX run takes about twice as long)
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(folder), mode],
        env={**os.environ, "KERAS_BACKEND": backend, "XLA_FLAGS": flags},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{backend} run failed:\n{result.stderr[-6000:]}"
    # named after keras.backend.backend() in the child: the backend that really ran
    with np.load(folder / f"{backend}.npz") as saved:
        return dict(saved)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("backends")
    return folder, _run("tensorflow", folder, "save")


@pytest.fixture(scope="module", params=OTHER_BACKENDS)
def runs(request: pytest.FixtureRequest) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """TensorFlow's results and those of the other backend, from the same initial weights."""
    backend = request.param
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed, so the {backend} backend cannot be compared")
    folder, tensorflow = request.getfixturevalue("reference")  # only when there is a backend
    return tensorflow, _run(backend, folder, "load")


def _compare_step(tensorflow: dict, other: dict, step: str, rtol: float | None) -> None:
    """One ``fit`` step: same variables, logged values, and moves of every variable (each
    within ``rtol`` of TensorFlow's; ``None``: the trainable ones only in direction and size)."""
    np.testing.assert_array_equal(other[f"{step}/paths"], tensorflow[f"{step}/paths"])
    logs = sorted(key for key in tensorflow if key.startswith(f"{step}/log/"))
    assert logs == sorted(key for key in other if key.startswith(f"{step}/log/"))
    for key in logs:
        if key.endswith("/dice"):
            assert other[key] == pytest.approx(tensorflow[key], abs=DICE_ATOL), key
        else:
            assert other[key] == pytest.approx(tensorflow[key], rel=LOSS_RTOL), key

    paths, trainable = tensorflow[f"{step}/paths"], tensorflow[f"{step}/trainable"]
    moves = [
        (tensorflow[f"{step}/delta/{i:04d}"], other[f"{step}/delta/{i:04d}"])
        for i in range(len(paths))
    ]
    assert all(np.isfinite(theirs).all() for _, theirs in moves), (
        f"{step}: a variable is not finite"
    )
    for group, tolerance in ((trainable, rtol), (~trainable, STATISTICS_RTOL)):
        indices = np.flatnonzero(group)
        if tolerance is None:
            ours = np.concatenate([moves[i][0].ravel() for i in indices])
            theirs = np.concatenate([moves[i][1].ravel() for i in indices])
            cosine = ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs))
            assert 1 - cosine <= DIRECTION_ATOL, f"{step}: the update points elsewhere ({cosine})"
            ratio = np.linalg.norm(theirs) / np.linalg.norm(ours)
            assert ratio == pytest.approx(1, rel=SIZE_RTOL), f"{step}: the update's size differs"
            continue
        largest = max((np.linalg.norm(moves[i][0]) for i in indices), default=0.0)
        for i in indices:
            ours, theirs = moves[i]
            scale = max(np.linalg.norm(ours), FLOOR * largest)
            if scale == 0:  # nothing moves: frozen batch norm's statistics
                assert not theirs.any(), f"{step}: {paths[i]} moved, but not on TensorFlow"
                continue
            error = np.linalg.norm(theirs - ours) / scale
            assert error <= tolerance, f"{step}: {paths[i]} moved differently ({error:.2g})"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_inference_logits_match_tensorflow(runs, name):
    tensorflow, other = (results[f"{name}/logits"] for results in runs)
    assert other.shape == tensorflow.shape == (2, 32, 32, 2)
    np.testing.assert_allclose(other, tensorflow, rtol=0, atol=LOGITS_ATOL)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_model_saved_under_tensorflow_loads_whole(runs, name):
    """From its ``.keras`` file: ENet's custom layers (max unpooling, channel zero-padding)
    included, as training saves a model and as distillation loads its teacher."""
    tensorflow, other = (results[f"{name}.keras/logits"] for results in runs)
    np.testing.assert_allclose(other, tensorflow, rtol=0, atol=LOGITS_ATOL)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_training_step_matches_tensorflow(runs, name):
    rtol = None if name in CHAOTIC_IN_TRAINING else STEP_RTOL
    _compare_step(*runs, f"{name}/train", rtol)


@pytest.mark.parametrize("name", CHAOTIC_IN_TRAINING)
def test_a_step_with_frozen_batch_norm_matches_tensorflow(runs, name):
    _compare_step(*runs, f"{name}/frozen_bn", FROZEN_STEP_RTOL)


def test_a_distillation_step_matches_tensorflow(runs):
    """Every term of eq. 8 and every trainable variable: the student, the kernel-matrix
    adapters and the adaptive-affinity weights (which ascend their gradient)."""
    logs = {key.rsplit("/", 1)[1] for key in runs[0] if key.startswith("distiller/train/log/")}
    assert {"loss", "segmentation", "logits", "kernel_matrix", "affinity"} <= logs
    _compare_step(*runs, "distiller/train", STEP_RTOL)
