"""Logits Module (LM): pixel-wise KL divergence between student and teacher class probabilities.

Loussaief, Ayad, Puig and Rashwan, "Adaptive Affinity-Based Generalization For MRI Imaging
Segmentation Across Resource-Limited Settings", section 2, equation 7; the temperature is
Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
from keras import ops

from napari_kdseg.distillation.base import DistillationTerm
from napari_kdseg.distillation.terms import LOGITS_DIRECTIONS
from napari_kdseg.losses._tensors import (
    Tensor,
    check_rank,
    check_same_shape,
    floating,
    sample_weights,
    weighted_mean,
)

if TYPE_CHECKING:
    from napari_kdseg.training.config import DistillationConfig


#: Which way round the divergence is taken: the paper's ``D_KL(p^s || p^t)`` or Hinton's
#: ``D_KL(p^t || p^s)``.
DIRECTIONS = LOGITS_DIRECTIONS


def logits_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    direction: str = "paper",
    sample_weight: Tensor | None = None,
) -> Tensor:
    """Pixel-wise Kullback-Leibler divergence of the student from the teacher (paper eq. 7).

    .. math::

        L_{Logits} = \\frac{T^2}{N} \\sum_{n=1}^{N} \\sum_{c} p^s_{n,c}
            \\left(\\log p^s_{n,c} - \\log p^t_{n,c}\\right),
        \\qquad p_{n} = \\mathrm{softmax}(z_n / T)

    where ``N`` counts the pixels of the whole batch. The direction is the paper's,
    :math:`D_{KL}(p^s \\| p^t)`, the student's distribution first ("reverse" KL, mode-seeking);
    Hinton's distillation uses :math:`D_{KL}(p^t \\| p^s)` (``direction="hinton"``), the
    cross-entropy with the teacher's probabilities as soft labels up to a constant. The two
    differ where the student is confidently wrong: the paper's term then has almost no
    gradient (:math:`p^s` is near 0 where the teacher puts its mass), Hinton's has
    :math:`p^s - p^t`. Without a segmentation loss to start it (scans without masks), a
    student can settle on background everywhere under the paper's direction and stay there,
    which Hinton's does not allow. With ``temperature`` ``T`` both logits
    are divided by ``T`` and the result multiplied by ``T^2``, so that gradient magnitudes do
    not shrink as ``T`` grows (Hinton et al., section 2). Log-probabilities come from
    ``log_softmax``, so logits of any size (1e4 included) give a finite loss; the teacher side
    is not detached (a frozen teacher receives no update anyway).

    With a weight :math:`w_b` per sample the mean runs over the pixels of the weighted
    samples,

    .. math::

        L_{Logits} = T^2 \\frac{\\sum_{n} w_{b(n)} \\sum_{c} p^s_{n,c}
            \\left(\\log p^s_{n,c} - \\log p^t_{n,c}\\right)}{\\sum_{n} w_{b(n)}}

    with :math:`b(n)` the sample of pixel :math:`n`: weights 0 and 1 give the loss of the
    samples weighted 1 alone, and 0 for a batch with none.

    Args:
        student_logits: ``(batch, H, W, classes)`` student logits.
        teacher_logits: teacher logits of the same shape.
        temperature: softening temperature ``T > 0``; 1 is the paper's plain KL.
        direction: ``"paper"`` for :math:`D_{KL}(p^s \\| p^t)`, ``"hinton"`` for
            :math:`D_{KL}(p^t \\| p^s)`.
        sample_weight: ``(batch,)`` weights :math:`w_b`, 1 for a sample that counts and 0
            for one left out; ``None`` counts every sample (the plain mean above).

    Returns:
        A scalar, zero when both give the same probabilities and positive otherwise, up to
        float32 rounding (near-equal inputs can give about -1e-8).

    Raises:
        ValueError: for a non-positive temperature, an unknown direction or mismatched
            shapes.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    student_logits, teacher_logits = floating(student_logits), floating(teacher_logits)
    check_rank(student_logits, 4, "student_logits")
    check_same_shape(student_logits, teacher_logits, "student and teacher logits")
    teacher_logits = ops.cast(teacher_logits, student_logits.dtype)
    log_p_student = ops.log_softmax(student_logits / temperature, axis=-1)
    log_p_teacher = ops.log_softmax(teacher_logits / temperature, axis=-1)
    if direction == "hinton":
        log_p_student, log_p_teacher = log_p_teacher, log_p_student
    per_pixel = ops.sum(ops.exp(log_p_student) * (log_p_student - log_p_teacher), axis=-1)
    if sample_weight is None:
        return ops.mean(per_pixel) * temperature**2
    weights = sample_weights(sample_weight, per_pixel)
    return weighted_mean(per_pixel, ops.reshape(weights, (-1, 1, 1))) * temperature**2


@keras.saving.register_keras_serializable(package="napari_kdseg")
class LogitsLoss(keras.losses.Loss):
    """:func:`logits_kl` as a Keras loss: ``y_true`` the teacher's logits, ``y_pred`` the student's.

    The value is already averaged over the batch and its pixels (paper eq. 7), so the Keras
    reduction sees a scalar and leaves it as it is.

    Args:
        temperature: softening temperature ``T``; see :func:`logits_kl`.
        direction: ``"paper"`` or ``"hinton"``; see :func:`logits_kl`.
        name, reduction, dtype: as :class:`keras.losses.Loss`.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        direction: str = "paper",
        name: str = "logits_kl",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = float(temperature)
        self.direction = direction

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        return logits_kl(y_pred, y_true, self.temperature, self.direction)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "direction": self.direction,
        }


class LogitsTerm(DistillationTerm):
    """LM as a distillation term: :func:`logits_kl` of the student's logits from the
    teacher's, at ``config.temperature`` and in ``config.logits_direction``."""

    def __init__(self, config: DistillationConfig, num_classes: int, **kwargs: Any) -> None:
        super().__init__(config, num_classes, **kwargs)
        self.temperature = config.temperature
        self.direction = config.logits_direction

    def call(
        self,
        student: dict[str, Tensor],
        teacher: dict[str, Tensor],
        sample_weight: Tensor | None = None,
    ) -> Tensor:
        return logits_kl(
            student["logits"], teacher["logits"], self.temperature, self.direction, sample_weight
        )
