"""Logits Module (paper eq. 7): values, invariants, gradients and serialisation."""

from __future__ import annotations

import keras
import loss_reference as reference
import numpy as np
import pytest
from keras import ops

from napari_kdseg.losses import LogitsLoss, logits_kl


def as_float(value: object) -> float:
    return float(ops.convert_to_numpy(value))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_matches_numpy_reference(rng: np.random.Generator, temperature: float) -> None:
    student = rng.normal(scale=2.0, size=(2, 5, 6, 3)).astype(np.float32)
    teacher = rng.normal(scale=2.0, size=(2, 5, 6, 3)).astype(np.float32)
    expected = reference.logits_kl(student, teacher, temperature)
    assert as_float(logits_kl(student, teacher, temperature)) == pytest.approx(expected, rel=1e-5)


def test_direction_is_student_first(rng: np.random.Generator) -> None:
    student = rng.normal(scale=3.0, size=(1, 4, 4, 2))
    teacher = rng.normal(scale=3.0, size=(1, 4, 4, 2))
    forward, backward = as_float(logits_kl(student, teacher)), as_float(logits_kl(teacher, student))
    assert forward == pytest.approx(reference.logits_kl(student, teacher), rel=1e-6)
    assert forward != pytest.approx(backward, rel=1e-3)


def test_hintons_direction_swaps_the_arguments(rng: np.random.Generator) -> None:
    student = rng.normal(scale=3.0, size=(1, 4, 4, 2))
    teacher = rng.normal(scale=3.0, size=(1, 4, 4, 2))
    hinton = as_float(logits_kl(student, teacher, 2.0, direction="hinton"))
    assert hinton == pytest.approx(reference.logits_kl(teacher, student, 2.0), rel=1e-6)
    with pytest.raises(ValueError, match=r"direction must be one of \('paper', 'hinton'\)"):
        logits_kl(student, teacher, direction="reverse")


def test_hintons_direction_pulls_a_confidently_wrong_student_back(gradients) -> None:
    """Where the student says background for sure and the teacher says prostate, the paper's
    divergence has almost no gradient and Hinton's has p_s - p_t: why a student taught
    without masks can settle on background under the first and not under the second."""
    student = np.zeros((1, 2, 2, 2), np.float32)
    student[..., 0] = 12.0  # background, p about 1 - 6e-6
    teacher = np.zeros((1, 2, 2, 2), np.float32)
    teacher[..., 1] = 3.0  # prostate, p about 0.95

    def pull(direction: str) -> float:
        _, (grad_student, _) = gradients(
            lambda s, t: logits_kl(s, t, direction=direction), student, teacher
        )
        return float(np.abs(ops.convert_to_numpy(grad_student)).max())

    assert pull("paper") < 1e-3
    assert pull("hinton") > 0.2


def test_zero_when_student_equals_teacher(rng: np.random.Generator) -> None:
    logits = rng.normal(scale=5.0, size=(2, 4, 4, 2)).astype(np.float32)
    assert as_float(logits_kl(logits, logits)) == 0.0
    # softmax is shift-invariant: the same probabilities give zero too
    assert as_float(logits_kl(logits, logits + 7.0)) == pytest.approx(0.0, abs=1e-6)


def test_non_negative(rng: np.random.Generator) -> None:
    for scale in (0.01, 1.0, 30.0):
        student = rng.normal(scale=scale, size=(3, 4, 4, 4)).astype(np.float32)
        teacher = rng.normal(scale=scale, size=(3, 4, 4, 4)).astype(np.float32)
        assert as_float(logits_kl(student, teacher)) >= 0.0


def test_finite_on_extreme_logits(gradients) -> None:
    student = np.zeros((1, 2, 2, 2), np.float32)
    student[..., 0], student[..., 1] = 1e4, -1e4
    teacher = -student
    value, (grad_student, grad_teacher) = gradients(logits_kl, student, teacher)
    # p_s is one-hot on the class the teacher puts exp(-2e4) on: KL = 2e4 exactly
    assert as_float(value) == pytest.approx(2e4, rel=1e-6)
    assert np.all(np.isfinite(ops.convert_to_numpy(grad_student)))
    assert np.all(np.isfinite(ops.convert_to_numpy(grad_teacher)))


def test_gradient_matches_finite_differences(rng: np.random.Generator, gradients) -> None:
    student = rng.normal(size=(2, 3, 3, 3))
    teacher = rng.normal(size=(2, 3, 3, 3))
    for temperature in (1.0, 3.0):

        def loss(s, temperature=temperature):
            return logits_kl(s, teacher, temperature)

        _, (grad,) = gradients(loss, student)
        grad = ops.convert_to_numpy(grad)
        assert np.any(np.abs(grad) > 1e-4)
        for numeric, analytic in reference.directional_derivatives(loss, student, grad, rng):
            assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-9)


def test_float64_stays_float64() -> None:
    # float64 where the backend has it (JAX without x64 turns it into float32)
    float64 = ops.dtype(ops.convert_to_tensor(np.zeros((), np.float64)))
    assert ops.dtype(logits_kl(np.zeros((1, 2, 2, 2)), np.ones((1, 2, 2, 2)))) == float64


def test_rejects_bad_arguments() -> None:
    logits = np.zeros((1, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="temperature"):
        logits_kl(logits, logits, temperature=0.0)
    with pytest.raises(ValueError, match="same shape"):
        logits_kl(logits, np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="4 dimensions"):
        logits_kl(logits[0], logits[0])


def test_loss_class_takes_teacher_as_y_true(rng: np.random.Generator) -> None:
    student = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
    teacher = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
    loss = LogitsLoss(temperature=2.0)
    assert as_float(loss(teacher, student)) == pytest.approx(
        reference.logits_kl(student, teacher, 2.0), rel=1e-5
    )


def test_loss_class_round_trips() -> None:
    loss = LogitsLoss(temperature=3.0, direction="hinton", name="lm")
    config = loss.get_config()
    assert config["temperature"] == 3.0
    restored = LogitsLoss.from_config(config)
    assert (restored.temperature, restored.direction, restored.name) == (3.0, "hinton", "lm")
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(revived, LogitsLoss)
    assert (revived.temperature, revived.direction) == (3.0, "hinton")
