"""What every architecture shares: input checks, width scaling and the float32 logits head."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

#: Name of the last layer of every model: the logits, float32 whatever the dtype policy.
LOGITS_LAYER = "logits"

#: Batch-norm moving-average momentum of every model: 0.9, PyTorch's and Torch's default (their
#: 0.1), which the reference implementations train with. Keras' 0.99 lets the moving
#: statistics lag the weights for thousands of steps; on short runs validation in inference
#: mode then collapsed (ENet: validation Dice 0.37 to 0.05 while training Dice rose to 0.65).
BN_MOMENTUM = 0.9


def check_input_shape(
    model_name: str, input_shape: Sequence[int], multiple: int
) -> tuple[int, int, int]:
    """``(height, width, channels)`` after checking the model's strides allow it.

    Heights and widths must be static multiples of the model's total stride, so every
    down-sampling halves exactly and every skip connection or unpooling finds its partner.
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"{model_name}: input_shape must be (height, width, channels), got {input_shape!r}"
        )
    height, width, channels = input_shape
    if not all(isinstance(size, int) and size > 0 for size in (height, width, channels)):
        raise ValueError(
            f"{model_name}: input_shape must be positive integers (static sizes), "
            f"got {input_shape!r}"
        )
    if height % multiple or width % multiple:
        raise ValueError(
            f"{model_name} needs height and width that are multiples of {multiple} "
            f"(its total stride); got {height} x {width}"
        )
    return height, width, channels


def scaled(channels: int, width: float, minimum: int = 1) -> int:
    """``channels`` times the width multiplier, rounded, and never below ``minimum``."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return max(minimum, round(channels * width))


def logits_head(x: keras.KerasTensor) -> keras.KerasTensor:
    """Casts to float32 under a mixed-precision policy: losses and softmax need its range."""
    return layers.Activation("linear", dtype="float32", name=LOGITS_LAYER)(x)
