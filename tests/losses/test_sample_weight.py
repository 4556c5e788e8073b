"""Each distillation term weighted per sample (``sample_weight``, 1 or 0) is the term of the
samples weighted 1 alone: the others change nothing and receive no gradient, and a batch with
none gives 0 with finite, zero gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from keras import ops

from napari_kdseg.distillation import terms
from napari_kdseg.distillation.base import DistillationTerm
from napari_kdseg.losses import kernel_matrix_loss, logits_kl
from napari_kdseg.training.config import DistillationConfig

BATCH, CLASSES = 5, 3
#: Samples 1 and 4 are left out.
KEPT = np.array([1, 0, 1, 1, 0], np.float32)
#: What each term's gradient flows to: LM and AAM read the student's logits, KMM its features.
READS = {"logits": "logits", "affinity": "logits", "kernel_matrix": "encoder"}


def as_float(value: object) -> float:
    return float(ops.convert_to_numpy(value))


@pytest.fixture
def batch(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Student and teacher outputs, logits at 8 x 8 and features at the encoder tap, whose
    grids differ (KMM's adapter resizes the student's)."""
    return {
        "student": {
            "logits": rng.normal(scale=2.0, size=(BATCH, 8, 8, CLASSES)).astype(np.float32),
            "encoder": rng.normal(size=(BATCH, 4, 4, 6)).astype(np.float32),
        },
        "teacher": {
            "logits": rng.normal(scale=2.0, size=(BATCH, 8, 8, CLASSES)).astype(np.float32),
            "encoder": rng.normal(size=(BATCH, 2, 2, 5)).astype(np.float32),
        },
    }


def built_term(name: str, batch: dict[str, Any], rng: np.random.Generator) -> DistillationTerm:
    """The registered term ``name``, built, with random trainable weights (AAM's size weights
    are no longer uniform)."""
    config = DistillationConfig(temperature=2.0, logits_direction="hinton")
    term = terms.get(name).create(config, CLASSES)
    term.build(
        {tap: batch["student"][tap].shape for tap in term.student_taps},
        {tap: batch["teacher"][tap].shape for tap in term.teacher_taps},
    )
    for weight in term.trainable_weights:
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    return term


def rows(outputs: dict[str, np.ndarray], kept: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[kept > 0] for key, value in outputs.items()}


@pytest.mark.parametrize("name", list(READS))
def test_the_weighted_term_is_the_term_of_the_kept_samples_alone(
    name: str, batch: dict[str, Any], rng: np.random.Generator
) -> None:
    term = built_term(name, batch, rng)
    student, teacher = batch["student"], batch["teacher"]
    weighted = as_float(term(student, teacher, sample_weight=KEPT))
    alone = as_float(term(rows(student, KEPT), rows(teacher, KEPT)))
    assert alone > 0
    assert weighted == pytest.approx(alone, rel=1e-5)
    everyone = as_float(term(student, teacher))
    assert weighted != pytest.approx(everyone, rel=1e-3)  # the left-out samples did count
    ones = np.ones(BATCH, np.float32)
    assert as_float(term(student, teacher, sample_weight=ones)) == pytest.approx(everyone, rel=1e-5)


@pytest.mark.parametrize("name", list(READS))
def test_left_out_samples_receive_no_gradient(
    name: str, batch: dict[str, Any], rng: np.random.Generator, gradients
) -> None:
    term = built_term(name, batch, rng)
    student, teacher = batch["student"], batch["teacher"]
    read = READS[name]

    def loss(source: Any) -> Any:
        return term({**student, read: source}, teacher, sample_weight=KEPT)

    _, (gradient,) = gradients(loss, student[read])
    gradient = ops.convert_to_numpy(gradient)
    assert np.all(gradient[KEPT == 0] == 0)
    for sample in np.flatnonzero(KEPT):
        assert np.abs(gradient[sample]).max() > 0, sample


@pytest.mark.parametrize("name", list(READS))
def test_a_batch_with_no_sample_kept_gives_zero_and_finite_gradients(
    name: str, batch: dict[str, Any], rng: np.random.Generator, gradients
) -> None:
    term = built_term(name, batch, rng)
    student, teacher = batch["student"], batch["teacher"]
    read = READS[name]
    none = np.zeros(BATCH, np.float32)

    def loss(source: Any) -> Any:
        return term({**student, read: source}, teacher, sample_weight=none)

    value, (gradient,) = gradients(loss, student[read])
    assert as_float(value) == 0.0
    assert np.all(ops.convert_to_numpy(gradient) == 0)
    if term.trainable_weights:  # AAM's size weights, KMM's adapters
        _, weight_gradients = gradients(
            lambda: term(student, teacher, sample_weight=none), *term.trainable_weights
        )
        for weight_gradient in weight_gradients:
            assert np.all(ops.convert_to_numpy(weight_gradient) == 0)


def test_weights_must_be_one_per_sample(batch: dict[str, Any]) -> None:
    student, teacher = batch["student"]["logits"], batch["teacher"]["logits"]
    with pytest.raises(ValueError, match="one weight per sample: 3 for 5"):
        logits_kl(student, teacher, sample_weight=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="sample_weight must have 1 dimensions"):
        kernel_matrix_loss(student, teacher, sample_weight=np.ones((5, 1), np.float32))
