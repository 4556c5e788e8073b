"""Fixtures of the loss tests: a seeded generator and autodiff (TensorFlow's tape)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

Gradients = Callable[..., tuple[Any, list[Any]]]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240515)


@pytest.fixture
def gradients() -> Gradients:
    """``gradients(fn, *sources)`` -> ``(fn(...), [d fn / d source, ...])``.

    Sources are arrays, watched and passed to ``fn``, or Keras variables, which ``fn`` reads
    (it is then called without arguments). Autodiff goes through TensorFlow, the backend of
    this suite; under another backend these tests are skipped.
    """
    if keras.backend.backend() != "tensorflow":
        pytest.skip("autodiff tests use tf.GradientTape: run them with KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    def compute(fn: Callable[..., Any], *sources: Any) -> tuple[Any, list[Any]]:
        if all(isinstance(source, keras.Variable) for source in sources):
            with tf.GradientTape() as tape:
                value = fn()
            return value, tape.gradient(value, [source.value for source in sources])
        tensors = [tf.convert_to_tensor(source) for source in sources]
        with tf.GradientTape() as tape:
            for tensor in tensors:
                tape.watch(tensor)
            value = fn(*tensors)
        return value, tape.gradient(value, tensors)

    return compute
