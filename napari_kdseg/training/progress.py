"""Training progress as one JSON object per line, for the napari panel and for scripts.

Events: ``start`` (steps per epoch, epochs, device), ``step`` (every ``every`` steps: epoch,
step, running losses, learning rate, ETA), ``epoch`` (training and validation metrics, ETA);
training itself adds ``artifact`` (a file written) and ``done``. They go out through
:func:`napari_kdseg.core.events.emit`, like every other stage's.
"""

from __future__ import annotations

import time
from typing import Any

import keras

from napari_kdseg.core.events import emit


class JsonLinesProgress(keras.callbacks.Callback):
    """Streams ``start``/``step``/``epoch`` events while ``fit`` runs."""

    def __init__(
        self,
        steps_per_epoch: int,
        epochs: int,
        every: int = 10,
        initial_epoch: int = 0,
        placement: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.placement = placement or {}
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.initial_epoch = initial_epoch
        self.every = max(1, every)
        self._started = 0.0
        self._epoch = 0
        self._done_steps = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()
        emit(
            "start",
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            initial_epoch=self.initial_epoch,
            **self.placement,
            backend=keras.backend.backend(),
            device=_device(),
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._done_steps += 1
        if (batch + 1) % self.every == 0 or batch + 1 == self.steps_per_epoch:
            emit(
                "step",
                epoch=self._epoch + 1,
                step=batch + 1,
                steps=self.steps_per_epoch,
                eta_s=self._eta(),
                learning_rate=self._rate(),
                **(logs or {}),
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        emit(
            "epoch",
            epoch=epoch + 1,
            epochs=self.epochs,
            eta_s=self._eta(),
            **(logs or {}),
        )

    def _eta(self) -> float:
        elapsed = time.perf_counter() - self._started
        total = self.steps_per_epoch * (self.epochs - self.initial_epoch)
        remaining = max(0, total - self._done_steps)
        return round(elapsed / max(1, self._done_steps) * remaining, 1)

    def _rate(self) -> float | None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _device() -> str:
    """What runs the training: the first GPU's name, or "cpu"."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else "cpu"
    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0])
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return "unknown"
