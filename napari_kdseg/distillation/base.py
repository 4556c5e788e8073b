"""The one call signature of a built distillation term."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from napari_kdseg.training.config import DistillationConfig

#: A backend tensor (not :mod:`napari_kdseg.losses._tensors`' alias: the losses import this).
Tensor = Any
#: A feature map's static shape, ``(batch, h, w, channels)`` with ``None`` where unknown.
Shape = tuple[int | None, ...]


class DistillationTerm(keras.layers.Layer):
    """One distillation term of eq. 8: ``term(student, teacher)`` returns a scalar loss.

    ``student`` and ``teacher`` are dicts holding ``"logits"`` ``(batch, H, W, classes)`` and
    the features ``(batch, h, w, channels)`` at the taps the term lists in ``student_taps``
    and ``teacher_taps`` (names of :func:`napari_kdseg.models.feature_taps`). The teacher's
    are constants (their gradient is already stopped).

    ``term(student, teacher, sample_weight=w)``, with ``w`` ``(batch,)`` holding 1 for a
    sample the term reads and 0 for one it leaves out, returns the loss of the samples
    weighted 1 as if they were the batch alone: an excluded sample neither changes it nor
    receives a gradient, and a batch with none gives 0 (not NaN) and a zero gradient. The
    Distiller passes it only when the terms read the scans without a ground-truth mask alone
    (``DistillationConfig.distil_on``): a term whose ``call`` does not take it runs with
    every scan only.

    :class:`~napari_kdseg.distillation.terms.TermSpec` constructs a term as
    ``cls(config, num_classes)``; the Distiller then calls :meth:`build` with the shapes of
    the features at its taps, before training, so that every weight of the term exists when
    the optimizer is built. Trainable weights train with the student. The dtype defaults to
    float32 (the loss needs its range whatever the global policy): Keras casts the float
    tensors of both dicts to it.
    """

    student_taps: tuple[str, ...] = ()
    teacher_taps: tuple[str, ...] = ()

    def __init__(self, config: DistillationConfig, num_classes: int, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def build(self, student_shapes: dict[str, Shape], teacher_shapes: dict[str, Shape]) -> None:
        """Creates the term's weights, if any, from the shapes of the features at its taps."""

    def call(
        self,
        student: dict[str, Tensor],
        teacher: dict[str, Tensor],
        sample_weight: Tensor | None = None,
    ) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} must define call(student, teacher, sample_weight=None)"
        )
