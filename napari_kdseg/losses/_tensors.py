"""Input handling shared by the losses: dtypes, label shapes and shape checks."""

from __future__ import annotations

from typing import Any, TypeAlias

from keras import ops

#: A backend tensor, a NumPy array or anything ``keras.ops.convert_to_tensor`` accepts.
Tensor: TypeAlias = Any

# Losses take logs and sum over many pixels: half precision has neither the range nor the
# resolution, so it is promoted; float64 stays float64 (gradient checks use it).
_KEPT_FLOAT_DTYPES = ("float32", "float64")


def floating(x: Tensor) -> Tensor:
    """``x`` as a float32 tensor, or float64 if it already is."""
    x = ops.convert_to_tensor(x)
    if ops.dtype(x) in _KEPT_FLOAT_DTYPES:
        return x
    return ops.cast(x, "float32")


def int_labels(labels: Tensor) -> Tensor:
    """Integer labels ``(batch, H, W)`` from ``(batch, H, W)`` or ``(batch, H, W, 1)``.

    Any dtype is accepted: ``keras.losses.Loss`` hands ``y_true`` over as floats.
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 4 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    if len(labels.shape) != 3:
        raise ValueError(
            f"labels must be (batch, H, W) or (batch, H, W, 1), got shape {tuple(labels.shape)}"
        )
    return ops.cast(labels, "int32")


def check_same_shape(first: Tensor, second: Tensor, what: str) -> None:
    """Raises where two static shapes differ (unknown dimensions are not compared)."""
    first_shape, second_shape = tuple(first.shape), tuple(second.shape)
    mismatch = len(first_shape) != len(second_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(first_shape, second_shape, strict=False)
    )
    if mismatch:
        raise ValueError(f"{what} must have the same shape, got {first_shape} and {second_shape}")


def check_rank(x: Tensor, rank: int, what: str) -> None:
    """Raises unless ``x`` has ``rank`` dimensions."""
    if len(x.shape) != rank:
        raise ValueError(f"{what} must have {rank} dimensions, got shape {tuple(x.shape)}")


def per_sample(value: Tensor, batch: Tensor) -> Tensor:
    """A scalar ``value`` repeated once per sample of ``batch`` (its first axis).

    Keras reduces a loss returned per sample as usual (mean, sample weights) and, under
    ``tf.distribute``, divides it by the replicas in sync, whose gradients are then summed. It
    skips that division for a scalar, so a batch-level loss returned as one would count once
    per replica: twice the gradient and twice the reported loss on two devices.
    """
    value = ops.convert_to_tensor(value)
    first_entries = batch[(slice(None),) + (0,) * (len(batch.shape) - 1)]  # shape (batch,)
    return ops.zeros_like(ops.cast(first_entries, value.dtype)) + value


def sample_weights(sample_weight: Tensor, batch: Tensor) -> Tensor:
    """``sample_weight`` as a ``(batch,)`` tensor of ``batch``'s dtype, one weight per sample
    of ``batch`` (its first axis).

    Raises:
        ValueError: for weights that are not one per sample.
    """
    weights = ops.cast(ops.convert_to_tensor(sample_weight), batch.dtype)
    check_rank(weights, 1, "sample_weight")
    count, samples = weights.shape[0], batch.shape[0]
    if count is not None and samples is not None and count != samples:
        raise ValueError(f"sample_weight must give one weight per sample: {count} for {samples}")
    return weights


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum(weights * values) / sum(weights)``, ``weights`` broadcast to ``values``' shape.

    0 where every weight is 0, with a zero gradient (the denominator is then replaced by 1,
    never divided by: no NaN on either pass).
    """
    weights = ops.broadcast_to(ops.cast(weights, values.dtype), ops.shape(values))
    total = ops.sum(weights)
    return ops.sum(weights * values) / ops.where(total > 0, total, ops.ones_like(total))
