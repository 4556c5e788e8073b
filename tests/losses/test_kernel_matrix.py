"""Kernel Matrix Module (paper eqs. 5-6, after Qian et al.): values, invariants, the adapter."""

from __future__ import annotations

import keras
import loss_reference as reference
import numpy as np
import pytest
from keras import ops

from napari_kdseg.losses import KernelMatrixAdapter, kernel_matrix, kernel_matrix_loss


def as_float(value: object) -> float:
    return float(ops.convert_to_numpy(value))


def test_kernel_matrix_matches_numpy_reference(rng: np.random.Generator) -> None:
    features = rng.normal(size=(4, 3, 5, 6)).astype(np.float32)
    gram = ops.convert_to_numpy(kernel_matrix(features))
    assert gram.shape == (4, 4)
    np.testing.assert_allclose(gram, reference.kernel_matrix(features), atol=1e-6)
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-6)


def test_loss_matches_numpy_reference(rng: np.random.Generator) -> None:
    student = rng.normal(size=(5, 4, 4, 8)).astype(np.float32)
    teacher = rng.normal(size=(5, 4, 4, 8)).astype(np.float32) + 0.5
    expected = reference.kernel_matrix_loss(student, teacher)
    assert as_float(kernel_matrix_loss(student, teacher)) == pytest.approx(expected, rel=1e-5)


def test_zero_for_identical_features_and_symmetric(rng: np.random.Generator) -> None:
    student = rng.normal(size=(3, 4, 4, 8)).astype(np.float32)
    teacher = rng.normal(size=(3, 4, 4, 8)).astype(np.float32)
    assert as_float(kernel_matrix_loss(student, student)) == 0.0
    assert as_float(kernel_matrix_loss(student, teacher)) == pytest.approx(
        as_float(kernel_matrix_loss(teacher, student)), rel=1e-7
    )


def test_invariant_to_positive_per_sample_scaling(rng: np.random.Generator) -> None:
    student = rng.normal(size=(4, 4, 4, 8)).astype(np.float32)
    teacher = rng.normal(size=(4, 4, 4, 8)).astype(np.float32)
    scales = np.array([0.01, 1.0, 7.0, 300.0], np.float32).reshape(4, 1, 1, 1)
    assert as_float(kernel_matrix_loss(student * scales, teacher)) == pytest.approx(
        as_float(kernel_matrix_loss(student, teacher)), rel=1e-5
    )


def test_batch_of_one_gives_zero(rng: np.random.Generator) -> None:
    student = rng.normal(size=(1, 4, 4, 8)).astype(np.float32)
    teacher = rng.normal(size=(1, 4, 4, 8)).astype(np.float32)
    assert as_float(kernel_matrix_loss(student, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_finite_on_zero_and_extreme_features(gradients) -> None:
    zeros = np.zeros((3, 2, 2, 4), np.float32)
    extreme = np.full((3, 2, 2, 4), 1e4, np.float32)
    extreme[1] *= -1
    for student, teacher in ((zeros, extreme), (extreme, zeros), (zeros, zeros)):
        value, grads = gradients(kernel_matrix_loss, student, teacher)
        assert np.isfinite(as_float(value))
        assert all(np.all(np.isfinite(ops.convert_to_numpy(grad))) for grad in grads)


def test_gradient_matches_finite_differences(rng: np.random.Generator, gradients) -> None:
    student = rng.normal(size=(3, 2, 2, 3))
    teacher = rng.normal(size=(3, 2, 2, 3))

    def loss(s):
        return kernel_matrix_loss(s, teacher)

    _, (grad,) = gradients(loss, student)
    grad = ops.convert_to_numpy(grad)
    assert np.any(np.abs(grad) > 1e-3)
    for numeric, analytic in reference.directional_derivatives(loss, student, grad, rng):
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-8)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        kernel_matrix_loss(np.ones((2, 4, 4, 3)), np.ones((2, 4, 4, 5)))


def test_adapter_owns_a_one_by_one_kernel(rng: np.random.Generator) -> None:
    adapter = KernelMatrixAdapter(teacher_channels=6)
    student = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    teacher = rng.normal(size=(2, 8, 8, 6)).astype(np.float32)
    adapter(student, teacher)
    assert [tuple(w.shape) for w in adapter.trainable_weights] == [(1, 1, 4, 6)]


def test_adapter_resizes_to_the_teacher_grid(rng: np.random.Generator) -> None:
    adapter = KernelMatrixAdapter(teacher_channels=6)
    student = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    teacher = rng.normal(size=(2, 16, 16, 6)).astype(np.float32)
    value = adapter(student, teacher)
    assert np.isfinite(as_float(value))
    adapted = ops.convert_to_numpy(adapter.adapt(student, (16, 16)))
    assert adapted.shape == (2, 16, 16, 6)
    projected = np.einsum(
        "bhwc,cd->bhwd", student, ops.convert_to_numpy(adapter.projection.kernel)[0, 0]
    )
    expected = ops.convert_to_numpy(ops.image.resize(projected, (16, 16), interpolation="bilinear"))
    np.testing.assert_allclose(adapted, expected, atol=1e-5)
    # float32 against float64: the loss is a small mean of differences between near-equal
    # kernel entries, so its relative error runs to a few 1e-5 for some projections
    assert as_float(value) == pytest.approx(
        reference.kernel_matrix_loss(adapted, teacher), rel=1e-4
    )


def test_identity_adapter_gives_zero_for_identical_features(rng: np.random.Generator) -> None:
    features = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    adapter = KernelMatrixAdapter(teacher_channels=5)
    adapter.build(features.shape, features.shape)
    adapter.projection.kernel.assign(np.eye(5, dtype=np.float32)[None, None])
    assert as_float(adapter(features, features)) == pytest.approx(0.0, abs=1e-6)


def test_adapter_detaches_the_teacher(rng: np.random.Generator, gradients) -> None:
    adapter = KernelMatrixAdapter(teacher_channels=6)
    student = rng.normal(size=(3, 4, 4, 4)).astype(np.float32)
    teacher = rng.normal(size=(3, 4, 4, 6)).astype(np.float32)
    _, (grad_student, grad_teacher) = gradients(adapter, student, teacher)
    assert grad_teacher is None or not np.any(ops.convert_to_numpy(grad_teacher))
    assert np.any(ops.convert_to_numpy(grad_student))


def test_training_the_adapter_alone_reduces_the_loss(rng: np.random.Generator, gradients) -> None:
    student = rng.normal(size=(6, 8, 8, 4)).astype(np.float32)
    # a teacher some 1x1 projection of the student reaches, so the loss can go to 0
    mixing = rng.normal(size=(4, 8)).astype(np.float32)
    teacher = np.repeat(np.repeat(student @ mixing, 2, axis=1), 2, axis=2)
    adapter = KernelMatrixAdapter(teacher_channels=8)
    optimizer = keras.optimizers.Adam(learning_rate=0.05)
    first = as_float(adapter(student, teacher))
    for _ in range(30):
        _, grads = gradients(lambda: adapter(student, teacher), *adapter.trainable_weights)
        optimizer.apply_gradients(zip(grads, adapter.trainable_weights, strict=True))
    assert as_float(adapter(student, teacher)) < 0.5 * first


def test_adapter_rejects_wrong_teacher_channels(rng: np.random.Generator) -> None:
    adapter = KernelMatrixAdapter(teacher_channels=6)
    with pytest.raises(ValueError, match="channels"):
        adapter(np.ones((2, 4, 4, 3), np.float32), np.ones((2, 4, 4, 5), np.float32))


def test_adapter_round_trips() -> None:
    adapter = KernelMatrixAdapter(teacher_channels=12, name="kmm")
    config = adapter.get_config()
    assert config["teacher_channels"] == 12
    restored = KernelMatrixAdapter.from_config(config)
    assert (restored.teacher_channels, restored.name) == (12, "kmm")
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(adapter))
    assert isinstance(revived, KernelMatrixAdapter)
    assert revived.get_config() == config
