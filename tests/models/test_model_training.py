"""Saving, training and mixed precision (other Keras backends: tests/backends)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from napari_kdseg.models import MODEL_NAMES, feature_taps


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_save_and_load_give_identical_outputs(tiny, tmp_path, name):
    model = tiny.model(name, channels=3)
    images = tiny.images(channels=3)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(images, training=False)),
        keras.ops.convert_to_numpy(model(images, training=False)),
    )
    assert feature_taps(reloaded) == feature_taps(model)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="written with TensorFlow's GradientTape"
)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_gradient_step_reduces_the_loss(tiny, name):
    import tensorflow as tf

    # inference mode keeps the loss deterministic (no dropout, fixed batch-norm statistics),
    # so a small step against the gradient lowers it by about step x gradient norm
    model = tiny.build(name)
    images = tiny.images()
    labels = (images[..., 0] > 0.5).astype(np.int32)  # an image-dependent mask
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        before = loss(labels, model(images, training=False))
    gradients = tape.gradient(before, model.trainable_weights)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in gradients)
    norm = float(tf.linalg.global_norm(gradients))
    step = 1e-3
    for weight, gradient in zip(model.trainable_weights, gradients, strict=True):
        weight.assign_sub(step * gradient / norm)
    after = loss(labels, model(images, training=False))
    assert float(before) - float(after) > 0.5 * step * norm


def test_training_mode_runs_dropout_and_batch_statistics(tiny):
    model = tiny.model("enet")
    images = tiny.images()
    trained = keras.ops.convert_to_numpy(model(images, training=True))
    inferred = keras.ops.convert_to_numpy(model(images, training=False))
    assert trained.shape == inferred.shape
    assert not np.allclose(trained, inferred)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_are_float32_under_mixed_precision(tiny, name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny.build(name)
        logits = model(tiny.images(), training=False)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(keras.ops.convert_to_numpy(logits)).all()


# Other Keras backends (JAX, PyTorch): tests/backends/test_backend_parity.py, which checks the
# logits, a training step and a distillation step of every architecture on each of them.
