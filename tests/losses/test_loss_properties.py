"""Property-based tests of every loss: finite, and non-negative where its equation says so.

Shapes are random (batch 1-4, grids up to 16 x 16, 2-4 classes) and so are the logits:
ordinary, large (x 30), extreme (x 1e4), mixtures of -1e4 / 0 / +1e4 entries, confident
one-hot logits right or wrong, and constant logits (uniform probabilities). A loss that is
finite on these but not its gradient would still stop a long training run, so gradients are
checked too.

Where an equation guarantees a sign, the check allows float32 rounding only where the
computation can round below it (see :data:`ROUNDING`); terms built from squares, absolute
values, ``relu`` or ``-log_softmax`` are checked to be ``>= 0`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

from napari_kdseg.losses import (
    AdaptiveAffinity,
    LogitsLoss,
    SegmentationLoss,
    affinity_loss,
    affinity_terms,
    cross_entropy,
    dice_loss,
    focal_loss,
    kernel_matrix,
    kernel_matrix_loss,
    logits_kl,
)

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="gradient checks use tf.GradientTape: run with KERAS_BACKEND=tensorflow",
)

PROPERTY = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
#: How far below zero float32 rounding may take a sum of terms that are >= 0 in exact
#: arithmetic but computed as differences (a KL divergence as sum p (log p - log q), Dice as
#: 1 - a ratio that cannot exceed 1): a few units in the last place of values of order 1.
ROUNDING = 1e-6
LOGIT_KINDS = ("normal", "large", "extreme", "mixture", "confident", "constant")


@st.composite
def shapes(draw: st.DrawFn, max_classes: int = 4) -> tuple[int, int, int, int]:
    return (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 16)),
        draw(st.integers(1, 16)),
        draw(st.integers(2, max_classes)),
    )


def make_logits(shape: tuple[int, ...], kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=shape).astype(np.float32)
    if kind == "large":
        return (30 * rng.normal(size=shape)).astype(np.float32)
    if kind == "extreme":
        return (1e4 * rng.normal(size=shape)).astype(np.float32)
    if kind == "mixture":
        values = np.array([-1e4, -1.0, 0.0, 1.0, 1e4], np.float32)
        return rng.choice(values, size=shape)
    if kind == "confident":
        winners = rng.integers(0, shape[-1], size=shape[:-1])
        return (1e4 * (2 * np.eye(shape[-1])[winners] - 1)).astype(np.float32)
    return np.full(shape, rng.normal() * 1e4, np.float32)  # constant: uniform probabilities


@st.composite
def logits(draw: st.DrawFn, max_classes: int = 4) -> np.ndarray:
    shape = draw(shapes(max_classes))
    return make_logits(shape, draw(st.sampled_from(LOGIT_KINDS)), draw(st.integers(0, 2**32 - 1)))


@st.composite
def logits_and_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    values = draw(logits())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    classes = values.shape[-1]
    style = draw(st.sampled_from(["random", "one class", "blob"]))
    if style == "random":
        labels = rng.integers(0, classes, size=values.shape[:-1])
    elif style == "one class":
        labels = np.full(values.shape[:-1], rng.integers(0, classes))
    else:
        labels = np.zeros(values.shape[:-1], np.int64)
        height, width = values.shape[1:3]
        labels[:, height // 4 : 3 * height // 4 + 1, width // 4 : 3 * width // 4 + 1] = classes - 1
    return values, labels.astype(np.int32)


def value(tensor: Any) -> float:
    return float(ops.convert_to_numpy(tensor))


def value_and_gradient(fn: Callable[[Any], Any], source: np.ndarray) -> tuple[float, np.ndarray]:
    import tensorflow as tf

    tensor = tf.convert_to_tensor(source)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        result = fn(tensor)
    return value(result), tape.gradient(result, tensor).numpy()


def assert_finite(result: float, gradient: np.ndarray | None = None) -> None:
    assert np.isfinite(result), result
    if gradient is not None:
        assert np.all(np.isfinite(gradient)), "gradient holds NaN/Inf"


# --- Logits Module (eq. 7): a KL divergence ------------------------------------------------


@PROPERTY
@given(
    student=logits(),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from([*LOGIT_KINDS, "near the student"]),
    temperature=st.sampled_from([0.5, 1.0, 4.0]),
)
def test_logits_kl_is_finite_and_non_negative(
    student: np.ndarray, seed: int, kind: str, temperature: float
) -> None:
    if kind == "near the student":  # a student close to its teacher: KL rounds around 0
        noise = np.random.default_rng(seed).normal(size=student.shape).astype(np.float32)
        teacher = student + 1e-3 * noise
    else:
        teacher = make_logits(student.shape, kind, seed)
    result, gradient = value_and_gradient(lambda s: logits_kl(s, teacher, temperature), student)
    assert_finite(result, gradient)
    assert result >= -ROUNDING * temperature**2
    assert value(LogitsLoss(temperature)(teacher, student)) == pytest.approx(result, abs=1e-6)


@PROPERTY
@given(student=logits(), temperature=st.sampled_from([0.5, 1.0, 4.0]))
def test_logits_kl_of_identical_logits_is_zero(student: np.ndarray, temperature: float) -> None:
    assert value(logits_kl(student, student, temperature)) == 0.0


# --- Kernel Matrix Module (eqs. 5-6): squares and absolute values --------------------------


@st.composite
def features(draw: st.DrawFn) -> np.ndarray:
    shape = (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 8)),
        draw(st.integers(1, 8)),
        draw(st.integers(1, 6)),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.0, 1e-8, 1.0, 1e4]))
    array = (scale * rng.normal(size=shape)).astype(np.float32)
    if draw(st.booleans()):
        array[rng.integers(0, shape[0])] = 0.0  # an all-zero sample (a dead feature map)
    if draw(st.booleans()):
        array = np.maximum(array, 0.0)  # after a ReLU
    return array


@PROPERTY
@given(student=features(), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.0, 1.0, 1e4]))
def test_kernel_matrix_loss_is_finite_non_negative_and_bounded(
    student: np.ndarray, seed: int, scale: float
) -> None:
    teacher = (scale * np.random.default_rng(seed).normal(size=student.shape)).astype(np.float32)
    result, gradient = value_and_gradient(lambda s: kernel_matrix_loss(s, teacher), student)
    assert_finite(result, gradient)
    assert result >= 0.0
    # cosine similarities differ by at most 2: mean square <= 4, mean absolute value <= 2
    assert result <= 6.0 + 1e-5
    assert value(kernel_matrix_loss(teacher, student)) == pytest.approx(result, rel=1e-6, abs=1e-7)


@PROPERTY
@given(batch=features())
def test_kernel_matrix_is_a_cosine_gram_matrix(batch: np.ndarray) -> None:
    matrix = ops.convert_to_numpy(kernel_matrix(batch))
    assert matrix.shape == (batch.shape[0], batch.shape[0])
    assert np.all(np.isfinite(matrix))
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    assert np.all(np.abs(matrix) <= 1.0 + 1e-5)
    norms = np.sqrt((batch.reshape(len(batch), -1).astype(np.float64) ** 2).sum(axis=1))
    for index, norm in enumerate(norms):
        if norm == 0:
            assert matrix[index, index] == 0.0
        elif norm > 1e-3:  # well above the floor the rows are divided by
            assert matrix[index, index] == pytest.approx(1.0, abs=1e-5)
    assert value(kernel_matrix_loss(batch, batch)) == 0.0


# --- Adaptive Affinity Module (eqs. 1-4) ---------------------------------------------------


@PROPERTY
@given(
    data=logits_and_labels(),
    sizes=st.sampled_from([(1,), (2,), (1, 2, 3)]),
    margin=st.sampled_from([0.5, 3.0]),
)
def test_affinity_terms_are_finite_and_non_negative(
    data: tuple[np.ndarray, np.ndarray], sizes: tuple[int, ...], margin: float
) -> None:
    student, teacher_labels = data
    positive, negative = (
        ops.convert_to_numpy(term)
        for term in affinity_terms(student, teacher_labels, sizes, margin)
    )
    assert positive.shape == negative.shape == (len(sizes), student.shape[-1])
    assert np.all(np.isfinite(positive))
    assert np.all(np.isfinite(negative))
    # L_P- averages max(0, m - W): exactly >= 0, and at most the margin
    assert np.all(negative >= 0.0)
    assert np.all(np.sum(negative, axis=1) <= margin + 1e-5)
    # L_P+ averages W_ij = KL over pairs inside one teacher region; both directions of every
    # pair are in the same class term, so it sums (p_i - p_j)(log p_i - log p_j) >= 0 even on
    # the clipped, unnormalised probabilities; float32 sums may round a few ulps below 0
    assert np.all(positive >= -ROUNDING)
    result, gradient = value_and_gradient(
        lambda s: affinity_loss(s, teacher_labels, sizes, margin), student
    )
    assert_finite(result, gradient)
    assert result >= -ROUNDING


@PROPERTY
@given(data=logits_and_labels(), seed=st.integers(0, 2**32 - 1))
def test_adaptive_affinity_layer_is_finite_and_non_negative(
    data: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    student, teacher_labels = data
    layer = AdaptiveAffinity(student.shape[-1])
    rng = np.random.default_rng(seed)
    layer.size_logits.assign(rng.normal(size=layer.size_logits.shape) * 10)
    result, gradient = value_and_gradient(lambda s: layer(s, teacher_labels), student)
    assert_finite(result, gradient)
    assert result >= -ROUNDING


# --- segmentation loss: Dice plus cross-entropy or focal -----------------------------------


@PROPERTY
@given(data=logits_and_labels(), include_background=st.booleans())
def test_dice_is_finite_and_in_zero_one(
    data: tuple[np.ndarray, np.ndarray], include_background: bool
) -> None:
    student, labels = data
    result, gradient = value_and_gradient(
        lambda s: dice_loss(labels, s, include_background=include_background), student
    )
    assert_finite(result, gradient)
    assert -ROUNDING <= result <= 1.0 + ROUNDING


@PROPERTY
@given(
    data=logits_and_labels(),
    gamma=st.sampled_from([0.0, 0.5, 2.0]),
    alpha=st.sampled_from([None, 0.25]),
)
def test_cross_entropy_and_focal_are_finite_and_non_negative(
    data: tuple[np.ndarray, np.ndarray], gamma: float, alpha: float | None
) -> None:
    student, labels = data
    ce, ce_gradient = value_and_gradient(lambda s: cross_entropy(labels, s), student)
    assert_finite(ce, ce_gradient)
    assert ce >= 0.0
    focal, focal_gradient = value_and_gradient(
        lambda s: focal_loss(labels, s, gamma, alpha), student
    )
    assert_finite(focal, focal_gradient)
    assert focal >= 0.0
    if alpha is None:
        assert focal <= ce * (1 + 1e-5) + 1e-6  # (1 - p)^gamma <= 1 only lowers each term


@PROPERTY
@given(data=logits_and_labels(), kind=st.sampled_from(["dice+ce", "dice+focal"]))
def test_segmentation_loss_is_finite_and_non_negative(
    data: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    student, labels = data
    loss = SegmentationLoss(kind=kind)
    result, gradient = value_and_gradient(lambda s: loss(labels.astype(np.float32), s), student)
    assert_finite(result, gradient)
    assert result >= -ROUNDING
