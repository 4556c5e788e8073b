r"""Kernel Matrix Module (KMM): transfer of the batch's Gram matrix from teacher to student.

Loussaief, Ayad, Puig and Rashwan, "Adaptive Affinity-Based Generalization For MRI Imaging
Segmentation Across Resource-Limited Settings", section 2, equations 5-6, after Qian, Li and
Hu, "Improved Knowledge Distillation via Full Kernel Matrix Transfer", SDM 2022 (reference
code idstcv/KDA, which transfers a Nystrom approximation of the same matrix; the paper
transfers the full matrix).

Each sample's feature map, flattened to one row and L2-normalised, is the projection
:math:`f(x_i)`; the kernel is the cosine similarity between the samples of a batch,

.. math::

    K_S(x_i, x_j) = \langle f_S(x_i), f_S(x_j) \rangle, \qquad
    K_T(x_i, x_j) = \langle f_T(x_i), f_T(x_j) \rangle                           \quad (5)

    L_{KM} = \frac{1}{n^2} \sum_{i,j} (K_S - K_T)_{ij}^2
           + \frac{1}{n^2} \sum_{i,j} |K_S - K_T|_{ij}                           \quad (6)

over the ``n`` samples of the batch. The paper's eq. 6 writes a :math:`1/n` mean of squares
plus an L1 norm; both are taken here as means over the :math:`n^2` entries, which keeps the
two parts on the same scale whatever the batch size. Because the rows are normalised the
diagonal is always 1, the loss does not change when a sample's features are multiplied by a
positive number, and a batch of one sample gives :math:`K_S = K_T = [[1]]`: the loss is 0 and
so is its gradient (KMM needs batches of two or more).

Samples left out (not in the paper): with a weight :math:`v_i` per sample, 1 for a sample
that counts and 0 for one left out, both means run over the entries whose two samples count,

.. math::

    L_{KM} = \frac{\sum_{i,j} v_i v_j (K_S - K_T)_{ij}^2}{\sum_{i,j} v_i v_j}
           + \frac{\sum_{i,j} v_i v_j |K_S - K_T|_{ij}}{\sum_{i,j} v_i v_j}

Each row is normalised on its own, so this is the loss of the samples weighted 1 alone, and
0 for a batch with none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
from keras import layers, ops

from napari_kdseg.distillation.base import DistillationTerm, Shape
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

# Rows with a smaller norm are divided by this instead (all-zero features stay zero, finite).
_NORM_FLOOR = 1e-6


def kernel_matrix(features: Tensor) -> Tensor:
    """The ``(n, n)`` Gram matrix of eq. 5 over the ``n`` samples of a batch.

    Args:
        features: ``(n, ...)``, typically ``(n, h, w, channels)``; each sample is flattened to
            a row and L2-normalised.

    Returns:
        ``K = X X^T`` with ``X`` the normalised rows: cosine similarities, 1 on the diagonal
        (0 for an all-zero sample).
    """
    features = floating(features)
    rows = ops.reshape(features, (ops.shape(features)[0], -1))
    rows = ops.normalize(rows, axis=-1, epsilon=_NORM_FLOOR)
    return ops.matmul(rows, ops.transpose(rows))


def kernel_matrix_loss(
    student_features: Tensor, teacher_features: Tensor, sample_weight: Tensor | None = None
) -> Tensor:
    """Full kernel matrix transfer loss :math:`L_{KM}` (paper eq. 6).

    A pure, symmetric function of its arguments: nothing is detached here
    (:class:`KernelMatrixAdapter` treats the teacher as constant).

    Args:
        student_features: ``(n, h, w, channels)`` student features, already brought to the
            teacher's shape (see :class:`KernelMatrixAdapter`).
        teacher_features: ``(n, h, w, channels)`` teacher features.
        sample_weight: ``(n,)`` weights :math:`v_i`, 1 for a sample that counts and 0 for one
            left out (see the module docstring); ``None`` counts every sample.

    Returns:
        ``mean((K_S - K_T)^2) + mean(|K_S - K_T|)``, a scalar; the means weighted by
        :math:`v_i v_j` given ``sample_weight``.

    Raises:
        ValueError: where the two shapes differ.
    """
    student_features, teacher_features = floating(student_features), floating(teacher_features)
    check_same_shape(student_features, teacher_features, "student and teacher features")
    teacher_features = ops.cast(teacher_features, student_features.dtype)
    difference = kernel_matrix(student_features) - kernel_matrix(teacher_features)
    if sample_weight is None:
        return ops.mean(ops.square(difference)) + ops.mean(ops.abs(difference))
    weights = sample_weights(sample_weight, difference)
    pair_weights = weights[:, None] * weights[None, :]
    return weighted_mean(ops.square(difference), pair_weights) + weighted_mean(
        ops.abs(difference), pair_weights
    )


@keras.saving.register_keras_serializable(package="napari_kdseg")
class KernelMatrixAdapter(keras.layers.Layer):
    """KMM with its trainable adapter: student features to the teacher's channels and grid.

    The paper (section 2, "Kernel Matrix Module") aligns the two feature maps with a
    convolution with a 1x1 kernel: here a bias-free ``Conv2D`` from the student's channels to
    ``teacher_channels`` (a per-pixel linear projection; without a bias it commutes with the
    resizing), followed, when the grids differ, by a bilinear resize to the teacher's
    ``(h, w)``. ``call(student_features, teacher_features, sample_weight=None)`` returns
    :func:`kernel_matrix_loss` of the adapted student features against the teacher's, which
    are wrapped in ``stop_gradient`` (the teacher is a fixed target, as ``torch.no_grad`` in
    the KDA reference). The adapter is trained with the student and thrown away after.

    Args:
        teacher_channels: channels of the teacher's feature map.
        **kwargs: as :class:`keras.layers.Layer`; ``dtype`` defaults to float32, as the loss
            needs its range whatever the global policy.
    """

    def __init__(self, teacher_channels: int, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if teacher_channels < 1:
            raise ValueError(f"teacher_channels must be positive, got {teacher_channels}")
        self.teacher_channels = int(teacher_channels)
        self.projection = layers.Conv2D(
            self.teacher_channels,
            kernel_size=1,
            use_bias=False,
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(
        self, student_features_shape: tuple[Any, ...], teacher_features_shape: tuple[Any, ...]
    ) -> None:
        if len(student_features_shape) != 4 or len(teacher_features_shape) != 4:
            raise ValueError(
                "features must be (batch, h, w, channels), got "
                f"{student_features_shape} and {teacher_features_shape}"
            )
        if teacher_features_shape[-1] != self.teacher_channels:
            raise ValueError(
                f"teacher features have {teacher_features_shape[-1]} channels, the adapter "
                f"was made for {self.teacher_channels}"
            )
        self.projection.build(student_features_shape)

    def adapt(self, student_features: Tensor, teacher_grid: tuple[int, int]) -> Tensor:
        """Student features projected to the teacher's channels and resized to its grid."""
        projected = self.projection(student_features)
        if tuple(projected.shape[1:3]) != tuple(teacher_grid):
            projected = ops.image.resize(projected, teacher_grid, interpolation="bilinear")
        return projected

    def call(
        self,
        student_features: Tensor,
        teacher_features: Tensor,
        sample_weight: Tensor | None = None,
    ) -> Tensor:
        check_rank(teacher_features, 4, "teacher_features")
        adapted = self.adapt(student_features, tuple(teacher_features.shape[1:3]))
        return kernel_matrix_loss(adapted, ops.stop_gradient(teacher_features), sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "teacher_channels": self.teacher_channels}


class KernelMatrixTerm(DistillationTerm):
    """KMM as a distillation term: one :class:`KernelMatrixAdapter` per (student tap, teacher
    tap) pair of ``config.kernel_pairs``, their losses summed."""

    def __init__(self, config: DistillationConfig, num_classes: int, **kwargs: Any) -> None:
        super().__init__(config, num_classes, **kwargs)
        self.pairs = tuple(config.kernel_pairs)
        self.student_taps = tuple(sorted({s for s, _ in self.pairs}))
        self.teacher_taps = tuple(sorted({t for _, t in self.pairs}))
        self.adapters: list[KernelMatrixAdapter] = []

    def build(self, student_shapes: dict[str, Shape], teacher_shapes: dict[str, Shape]) -> None:
        for s, t in self.pairs:
            adapter = KernelMatrixAdapter(
                teacher_channels=int(teacher_shapes[t][-1]), name=f"kmm_{s}_to_{t}"
            )
            adapter.build(student_shapes[s], teacher_shapes[t])
            self.adapters.append(adapter)

    def call(
        self,
        student: dict[str, Tensor],
        teacher: dict[str, Tensor],
        sample_weight: Tensor | None = None,
    ) -> Tensor:
        return sum(
            adapter(student[s], teacher[t], sample_weight=sample_weight)
            for adapter, (s, t) in zip(self.adapters, self.pairs, strict=True)
        )
