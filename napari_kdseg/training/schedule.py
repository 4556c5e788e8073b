"""The cyclic learning rate of the paper (Smith, "Cyclical Learning Rates", WACV 2017).

The paper trains with "a CyclicLR ... with a step size of 2000, gradually decreasing it until
reaching a minimum of 1e-6". That is Smith's ``triangular2`` policy: the rate climbs linearly
from ``minimum`` to ``maximum`` over ``step_size`` iterations, falls back over as many, and the
amplitude halves every cycle, so it decays towards ``minimum``::

    cycle = floor(1 + t / (2 s)),   x = |t / s - 2 cycle + 1|
    lr(t) = minimum + (maximum - minimum) * max(0, 1 - x) / 2 ** (cycle - 1)
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="napari_kdseg")
class CyclicLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's triangular2 cyclic schedule between ``minimum`` and ``maximum``."""

    def __init__(self, maximum: float, minimum: float = 1e-6, step_size: int = 2000) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"need 0 < minimum <= maximum, got {minimum}, {maximum}")
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.maximum = float(maximum)
        self.minimum = float(minimum)
        self.step_size = int(step_size)

    def __call__(self, step: Any) -> Any:
        t = ops.cast(step, "float32")
        half = float(self.step_size)
        cycle = ops.floor(1.0 + t / (2.0 * half))
        x = ops.abs(t / half - 2.0 * cycle + 1.0)
        amplitude = (self.maximum - self.minimum) * ops.maximum(0.0, 1.0 - x)
        return self.minimum + amplitude / ops.power(2.0, cycle - 1.0)

    def get_config(self) -> dict[str, Any]:
        return {"maximum": self.maximum, "minimum": self.minimum, "step_size": self.step_size}
