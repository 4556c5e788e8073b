"""Segmentation metrics tracked during training."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="napari_kdseg")
class ForegroundDice(keras.metrics.Metric):
    """Dice of the arg-max prediction against the labels, pooled over every slice seen.

    Pooling intersections and sizes over the epoch (rather than averaging per-batch Dice) gives
    the Dice of all validation slices taken together, which is stable with empty slices.
    ``y_true`` holds integer labels ``(batch, H, W)``, ``y_pred`` logits ``(batch, H, W, C)``;
    every class > 0 counts as foreground.
    """

    def __init__(self, name: str = "dice", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        truth = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]) > 0, "float32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1) > 0, "float32")
        self.intersection.assign_add(ops.sum(truth * predicted))
        self.total.assign_add(ops.sum(truth) + ops.sum(predicted))

    def result(self) -> Any:
        # Nothing predicted and nothing there is a perfect score, not 0/0.
        return ops.where(
            self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1.0), 1.0
        )

    def reset_state(self) -> None:
        self.intersection.assign(0.0)
        self.total.assign(0.0)
