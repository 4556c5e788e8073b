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

    ``sample_weight`` ``(batch,)``, 1 or 0 per sample, leaves out the samples weighted 0 (the
    scans without a mask, in a distillation); with none counted yet the Dice is undefined
    (NaN: the command line and the panel then show no training Dice), not a perfect 1.
    """

    def __init__(self, name: str = "dice", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.samples = self.add_variable(shape=(), initializer="zeros", name="samples")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        truth = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]) > 0, "float32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1) > 0, "float32")
        if sample_weight is None:
            weight = ops.ones_like(truth[:, :1, :1])
        else:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1, 1))
        truth, predicted = truth * weight, predicted * weight
        self.intersection.assign_add(ops.sum(truth * predicted))
        self.total.assign_add(ops.sum(truth) + ops.sum(predicted))
        self.samples.assign_add(ops.sum(weight))

    def result(self) -> Any:
        # Nothing predicted and nothing there is a perfect score, not 0/0.
        dice = ops.where(
            self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1.0), 1.0
        )
        return ops.where(self.samples > 0, dice, float("nan"))

    def reset_state(self) -> None:
        self.intersection.assign(0.0)
        self.total.assign(0.0)
        self.samples.assign(0.0)
