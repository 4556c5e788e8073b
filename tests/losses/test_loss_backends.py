"""The losses give the same values on every Keras backend that is installed.

Each other backend runs in a subprocess with ``KERAS_BACKEND`` set (a process has one backend);
backends that are not installed are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from keras import ops

import napari_kdseg.losses as losses

OTHER_BACKENDS = ("jax", "torch")


def loss_values() -> dict[str, float]:
    """Every loss on fixed inputs, under the backend of the calling process."""
    rng = np.random.default_rng(7)
    student_logits = rng.normal(scale=2.0, size=(2, 8, 8, 2)).astype(np.float32)
    teacher_logits = rng.normal(scale=2.0, size=(2, 8, 8, 2)).astype(np.float32)
    labels = np.argmax(teacher_logits, axis=-1).astype(np.int32)
    student_features = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    teacher_features = rng.normal(size=(3, 8, 8, 6)).astype(np.float32)

    affinity = losses.AdaptiveAffinity(num_classes=2)
    affinity.size_logits.assign(rng.normal(size=(3, 2)).astype(np.float32))
    adapter = losses.KernelMatrixAdapter(teacher_channels=6)
    adapter.build(student_features.shape, teacher_features.shape)
    adapter.projection.kernel.assign(rng.normal(size=(1, 1, 5, 6)).astype(np.float32))

    first_only, middle_left_out = np.array([1, 0], np.float32), np.array([1, 0, 1], np.float32)
    values = {
        "logits_kl": losses.logits_kl(student_logits, teacher_logits, 2.0),
        "logits_kl_weighted": losses.logits_kl(
            student_logits, teacher_logits, 2.0, sample_weight=first_only
        ),
        "affinity_loss": losses.affinity_loss(student_logits, labels),
        "adaptive_affinity": affinity(student_logits, labels),
        "adaptive_affinity_weighted": affinity(student_logits, labels, sample_weight=first_only),
        "kernel_matrix_loss": losses.kernel_matrix_loss(
            student_features, teacher_features[:, :4, :4, :5]
        ),
        "kernel_matrix_adapter": adapter(student_features, teacher_features),
        "kernel_matrix_adapter_weighted": adapter(
            student_features, teacher_features, sample_weight=middle_left_out
        ),
        "dice": losses.dice_loss(labels, student_logits),
        "focal": losses.focal_loss(labels, student_logits, alpha=0.25),
        "cross_entropy": losses.cross_entropy(labels, student_logits),
        "segmentation": losses.SegmentationLoss("dice+focal")(labels, student_logits),
    }
    return {name: float(ops.convert_to_numpy(value)) for name, value in values.items()}


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_same_values_on_other_backends(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed, so the {backend} backend cannot be compared")
    script = (
        "import json, sys, keras; sys.path.insert(0, sys.argv[1]); "
        "from test_loss_backends import loss_values; "
        "print(json.dumps([keras.backend.backend(), loss_values()]))"
    )
    environment = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=True,
    )
    ran, other = json.loads(result.stdout.strip().splitlines()[-1])
    assert ran == backend
    here = loss_values()
    assert other.keys() == here.keys()
    for name, value in here.items():  # every value is of order 0.2 to 3: rel decides
        assert other[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
