r"""Segmentation loss :math:`L_{Seg}` of the paper's eq. 8: soft Dice plus focal or cross-entropy.

Loussaief, Ayad, Puig and Rashwan, "Adaptive Affinity-Based Generalization For MRI Imaging
Segmentation Across Resource-Limited Settings", section 2 ("the general segmentation loss that
can either [be] dice loss and focal loss"). Soft Dice after Milletari, Navab and Ahmadi,
"V-Net", 3DV 2016 (with MONAI's ``DiceLoss`` smoothing and ``batch=True`` reduction); focal
loss after Lin, Goyal, Girshick, He and Dollar, "Focal Loss for Dense Object Detection",
ICCV 2017.

All take integer labels ``(batch, H, W)`` (or ``(batch, H, W, 1)``) and logits
``(batch, H, W, classes)``; probabilities are the softmax over the classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from napari_kdseg.losses._tensors import Tensor, check_rank, floating, int_labels, per_sample

SEGMENTATION_KINDS = ("dice+ce", "dice+focal")
_FOCAL_FLOOR = 1e-12


def _prepare(labels: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """Logits as floats and the labels one-hot in the same dtype, after checking shapes."""
    logits = floating(logits)
    check_rank(logits, 4, "logits")
    labels = int_labels(labels)
    if tuple(labels.shape[1:]) != tuple(logits.shape[1:3]):
        raise ValueError(
            f"labels {tuple(labels.shape)} must match the logits' grid {tuple(logits.shape)}"
        )
    return ops.one_hot(labels, logits.shape[-1], dtype=logits.dtype), logits


def dice_loss(
    labels: Tensor, logits: Tensor, smooth: float = 1e-5, include_background: bool = False
) -> Tensor:
    r"""Soft Dice loss over the whole batch, averaged over the classes.

    .. math::

        L_{Dice} = 1 - \frac{1}{|C|} \sum_{c \in C}
            \frac{2 \sum_{n} p_{n,c} g_{n,c} + s}{\sum_{n} p_{n,c} + \sum_{n} g_{n,c} + s}

    with ``n`` running over every pixel of every sample of the batch (one Dice per class for
    the batch, as MONAI's ``batch=True``: slices without foreground do not each count as a
    failure), :math:`g` the one-hot labels, :math:`p` the softmax and ``s`` the smoothing. A
    class absent from both the labels and the prediction scores a Dice of 1, so the loss is 0
    rather than NaN; the soft prediction counts, so "absent" means confidently absent.

    Args:
        labels: ``(batch, H, W)`` or ``(batch, H, W, 1)`` integer labels.
        logits: ``(batch, H, W, classes)``.
        smooth: ``s``, added to numerator and denominator.
        include_background: average over every class, or (default) over classes 1 and up.

    Returns:
        A scalar in ``[0, 1]``.
    """
    one_hot, logits = _prepare(labels, logits)
    probs = ops.softmax(logits, axis=-1)
    pixel_axes = (0, 1, 2)
    intersection = ops.sum(probs * one_hot, axis=pixel_axes)
    total = ops.sum(probs, axis=pixel_axes) + ops.sum(one_hot, axis=pixel_axes)
    dice = (2.0 * intersection + smooth) / (total + smooth)
    if not include_background:
        if dice.shape[0] < 2:
            raise ValueError("without the background class, Dice needs at least two classes")
        dice = dice[1:]
    return 1.0 - ops.mean(dice)


def _focal_alpha(alpha: float | Sequence[float], num_classes: int) -> list[float]:
    """Per-class weights: a sequence as given, a number ``a`` as ``1 - a`` for the background
    and ``a`` for every other class (Lin et al.'s binary convention)."""
    if isinstance(alpha, int | float):
        return [1.0 - alpha] + [float(alpha)] * (num_classes - 1)
    alpha = [float(value) for value in alpha]
    if len(alpha) != num_classes:
        raise ValueError(f"alpha needs one weight per class ({num_classes}), got {alpha}")
    return alpha


def focal_loss(
    labels: Tensor,
    logits: Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
) -> Tensor:
    r"""Softmax focal loss, averaged over the pixels of the batch.

    .. math::

        L_{Focal} = -\frac{1}{N} \sum_{n} \alpha_{y_n} (1 - p_{n,y_n})^{\gamma} \log p_{n,y_n}

    With ``gamma = 0`` and no ``alpha`` it is :func:`cross_entropy`.

    Args:
        labels: ``(batch, H, W)`` or ``(batch, H, W, 1)`` integer labels.
        logits: ``(batch, H, W, classes)``.
        gamma: focusing parameter :math:`\gamma \ge 0` (2 in Lin et al.).
        alpha: class balance: ``None`` (all 1), one weight per class, or a number ``a``
            giving ``a`` to the foreground classes and ``1 - a`` to the background.

    Returns:
        A non-negative scalar.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be non-negative, got {gamma}")
    one_hot, logits = _prepare(labels, logits)
    log_p_true = ops.sum(one_hot * ops.log_softmax(logits, axis=-1), axis=-1)
    # 1 - p from expm1 stays accurate near p = 1; the floor keeps the slope of (1 - p)^gamma
    # finite there when gamma < 1
    modulation = ops.power(ops.maximum(-ops.expm1(log_p_true), _FOCAL_FLOOR), gamma)
    per_pixel = -modulation * log_p_true
    if alpha is not None:
        weights = ops.convert_to_tensor(_focal_alpha(alpha, logits.shape[-1]), logits.dtype)
        per_pixel = per_pixel * ops.sum(one_hot * weights, axis=-1)
    return ops.mean(per_pixel)


def cross_entropy(labels: Tensor, logits: Tensor) -> Tensor:
    r"""Softmax cross-entropy, averaged over the pixels of the batch.

    .. math::

        L_{CE} = -\frac{1}{N} \sum_{n} \log p_{n,y_n}

    Args:
        labels: ``(batch, H, W)`` or ``(batch, H, W, 1)`` integer labels.
        logits: ``(batch, H, W, classes)``.

    Returns:
        A non-negative scalar.
    """
    one_hot, logits = _prepare(labels, logits)
    return -ops.mean(ops.sum(one_hot * ops.log_softmax(logits, axis=-1), axis=-1))


@keras.saving.register_keras_serializable(package="napari_kdseg")
class SegmentationLoss(keras.losses.Loss):
    """:math:`L_{Seg}` of eq. 8: :func:`dice_loss` plus :func:`cross_entropy` or :func:`focal_loss`.

    ``y_true`` are the integer labels (Keras hands them over as floats; they are cast back),
    ``y_pred`` the logits. The value is a batch-level scalar (Dice is computed over the whole
    batch), so the Keras reduction leaves it as it is.

    Args:
        kind: ``"dice+ce"`` or ``"dice+focal"``.
        smooth: Dice smoothing; see :func:`dice_loss`.
        include_background: whether Dice averages over the background class too.
        gamma: focal focusing parameter (``"dice+focal"`` only).
        alpha: focal class balance (``"dice+focal"`` only); see :func:`focal_loss`.
        name, reduction, dtype: as :class:`keras.losses.Loss`.
    """

    def __init__(
        self,
        kind: str = "dice+ce",
        smooth: float = 1e-5,
        include_background: bool = False,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        name: str = "segmentation",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        if kind not in SEGMENTATION_KINDS:
            raise ValueError(f"kind must be one of {SEGMENTATION_KINDS}, got {kind!r}")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.kind = kind
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.gamma = float(gamma)
        self.alpha = alpha if alpha is None or isinstance(alpha, int | float) else list(alpha)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        """The batch's loss once per sample (see :func:`per_sample`); calling the loss
        object reduces it back to that scalar."""
        return per_sample(self.batch_loss(y_true, y_pred), floating(y_pred))

    def batch_loss(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        """Dice plus focal or cross-entropy over the whole batch, a scalar."""
        dice = dice_loss(y_true, y_pred, self.smooth, self.include_background)
        if self.kind == "dice+focal":
            return dice + focal_loss(y_true, y_pred, self.gamma, self.alpha)
        return dice + cross_entropy(y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kind": self.kind,
            "smooth": self.smooth,
            "include_background": self.include_background,
            "gamma": self.gamma,
            "alpha": self.alpha,
        }
