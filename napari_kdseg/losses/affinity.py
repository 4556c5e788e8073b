r"""Adaptive Affinity Module (AAM): pairwise affinities of the student's predictions.

Loussaief, Ayad, Puig and Rashwan, "Adaptive Affinity-Based Generalization For MRI Imaging
Segmentation Across Resource-Limited Settings", section 2, equations 1-4, after Ke, Hwang, Liu
and Yu, "Adaptive Affinity Fields for Semantic Segmentation", ECCV 2018 (AAF; reference code
twke18/Adaptive_Affinity_Fields, ``network/aaf/losses.py`` and ``pyscripts/train/train_aaf.py``).

The teacher's predicted label map splits the pairs ``(i, j)`` of a pixel ``i`` and one of its
neighbours ``j`` into :math:`P_+` (same label) and :math:`P_-` (different labels). On the
student's class probabilities :math:`F`,

.. math::

    W_{ij} = D_{KL}(F_i \| F_j)                                         \quad (3)

    L_{P_+} = \frac{1}{|P_+|} \sum_{(i,j) \in P_+} W_{ij}               \quad (1)

    L_{P_-} = \frac{1}{|P_-|} \sum_{(i,j) \in P_-} \max(0, m - W_{ij})  \quad (2)

    L_{AA} = L_{P_+} + L_{P_-}                                          \quad (4)

so the student is pulled towards smooth predictions inside the teacher's regions (AAF's
"grouping force" on non-edge pairs) and pushed to a KL of at least ``m`` across the teacher's
boundaries (its "separating force" on edge pairs).

Conventions, as the reference where the paper is silent:

- Neighbours: the 8 pixels at offsets ``(+-d, 0)``, ``(0, +-d)``, ``(+-d, +-d)`` for each
  ``d`` in ``sizes`` (AAF's corners and edge-midpoints of ``(2d+1) x (2d+1)`` patches, sizes
  1, 2, 3). Every pixel is a centre ``i``, so each unordered pair enters in both directions.
- Probabilities are clipped to ``[1e-4, 1]`` before the KL (AAF's ``bot_epsilon``), which
  bounds :math:`W` (about 9.2 at most for two classes) and keeps extreme logits finite; the
  clipping is done on ``log_softmax``, which is the same value and stays stable.
- The KL runs over the class vector, the paper's eq. 3. AAF instead makes every class
  channel ``c`` a term of its own, the binary KL of :math:`(F^c, 1 - F^c)`, an edge where the
  one-hot labels differ in that channel; for two classes both give the same loss, for more
  they do not. AAF writes the neighbour first, :math:`D_{KL}(F_j \| F_i)`; over a symmetric
  neighbourhood the unweighted sums are equal, and only per-class weights tell them apart.
- Pairs whose neighbour falls outside the image are left out (never compared with padding,
  no wrap-around).
  A set with no pairs contributes 0 (its sum is divided by ``max(|P|, 1)``), never NaN.
- Several sizes (AAF's adaptive kernel sizes, one weight per size and category): the terms
  are computed per size ``s`` and per class ``c`` of the centre pixel ``i`` (for :math:`P_-`
  pairs too, as AAF indexes its weights by the centre's one-hot label), normalised by the
  number of pairs of that size, and summed with weights :math:`w_{s,c}`:

  .. math::

      L_{AA} = \sum_{s,c} w_{s,c} \left(
          \frac{\sum_{(i,j) \in P_+^s,\, y_i = c} W_{ij}}{|P_+^s|}
        + \frac{\sum_{(i,j) \in P_-^s,\, y_i = c} \max(0, m - W_{ij})}{|P_-^s|} \right)

  Without weights every :math:`w_{s,c} = 1/|sizes|` (AAF's zero-initialised softmax), which
  averages eq. 4 over the sizes; with one size it is eq. 4 exactly. AAF keeps separate weights
  for :math:`P_+` and :math:`P_-`; here one set weights both.
- Samples left out (not in the paper): with a weight :math:`v_b` per sample, 1 for a sample
  that counts and 0 for one left out, a pair counts with the weight of its centre's sample,
  in the sums and in the counts alike,

  .. math::

      |P_+^s| = \sum_{(i,j) \in P_+^s} v_{b(i)}, \qquad
      \sum_{(i,j) \in P_+^s,\, y_i = c} v_{b(i)} W_{ij}

  (and so for :math:`P_-^s`). Neighbours never cross samples, so this is the loss of the
  samples weighted 1 alone, and 0 for a batch with none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from napari_kdseg.distillation.base import DistillationTerm
from napari_kdseg.losses._tensors import Tensor, check_rank, floating, int_labels, sample_weights

if TYPE_CHECKING:
    from napari_kdseg.training.config import DistillationConfig

#: AAF's lower clipping bound on probabilities (``bot_epsilon``); the upper one is 1.
PROBABILITY_FLOOR = 1e-4


def neighbour_offsets(size: int) -> tuple[tuple[int, int], ...]:
    """The 8 ``(dy, dx)`` offsets at distance ``size``: the corners and edge-midpoints of a
    ``(2 size + 1)`` square patch around the centre."""
    return tuple(
        (dy, dx) for dy in (-size, 0, size) for dx in (-size, 0, size) if (dy, dx) != (0, 0)
    )


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(size) for size in sizes)
    if not sizes or any(size < 1 for size in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes must be distinct positive integers, got {sizes!r}")
    return sizes


def _neighbours(x: Tensor, size: int) -> Tensor:
    """``(batch, H, W, channels, 8)``: ``x`` at the 8 neighbours at distance ``size`` of every
    pixel, in the order of :func:`neighbour_offsets`, and 0 outside the image.

    A depthwise convolution with one-hot 3x3 kernels dilated by ``size`` gathers all 8 in one
    operation whose gradient is one transposed convolution: forward and backward together
    took 2.6 times less time on CPU than 8 slices per size (whose gradients each pad a
    full-size tensor).
    """
    height, width, channels = x.shape[1:]
    kernel = np.zeros((3, 3, channels, 8), np.float32)
    for index, (dy, dx) in enumerate(neighbour_offsets(1)):
        kernel[dy + 1, dx + 1, :, index] = 1.0
    gathered = ops.depthwise_conv(
        x, ops.convert_to_tensor(kernel, x.dtype), padding="same", dilation_rate=size
    )
    return ops.reshape(gathered, (-1, height, width, channels, 8))


def _affinity_terms_at_size(
    probs: Tensor,
    log_probs: Tensor,
    labels: Tensor,
    one_hot: Tensor,
    size: int,
    margin: float,
    centre_weights: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The per-class :math:`P_+` and :math:`P_-` terms at one distance, each ``(classes,)``.

    ``probs`` and ``log_probs`` are clipped, ``one_hot`` is the teacher labels one-hot;
    ``centre_weights`` ``(batch,)`` weighs each pair by its centre's sample (``None``: 1).
    """
    dtype = log_probs.dtype
    # labels + 1, so that the convolution's zero padding marks the neighbours outside; the
    # comparisons allow for a convolution that is not exact (a Winograd one, say)
    shifted_labels = ops.cast(labels, dtype)[..., None] + 1.0
    neighbour_labels = _neighbours(shifted_labels, size)[..., 0, :]
    same = ops.cast(ops.abs(neighbour_labels - shifted_labels) < 0.5, dtype)
    different = ops.cast(neighbour_labels > 0.5, dtype) - same
    if centre_weights is not None:
        # weighs each pair in the sums below and in the counts |P| alike
        centre_weights = ops.reshape(centre_weights, (-1, 1, 1, 1))
        same, different = same * centre_weights, different * centre_weights
    # W_ij = sum_c p_i (log p_i - log p_j), for the 8 neighbours j of every centre i
    centre_term = ops.sum(probs * log_probs, axis=-1, keepdims=True)
    kl = centre_term - ops.sum(probs[..., None] * _neighbours(log_probs, size), axis=-2)
    positive_map = ops.sum(same * kl, axis=-1)
    negative_map = ops.sum(different * ops.relu(margin - kl), axis=-1)
    return (
        ops.einsum("bhw,bhwc->c", positive_map, one_hot) / ops.maximum(ops.sum(same), 1.0),
        ops.einsum("bhw,bhwc->c", negative_map, one_hot) / ops.maximum(ops.sum(different), 1.0),
    )


def affinity_terms(
    student_logits: Tensor,
    teacher_labels: Tensor,
    sizes: Sequence[int] = (1, 2, 3),
    margin: float = 3.0,
    sample_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The unweighted per-size, per-class terms of :func:`affinity_loss`.

    Args:
        student_logits: ``(batch, H, W, classes)`` student logits.
        teacher_labels: ``(batch, H, W)`` (or ``(batch, H, W, 1)``) integer labels predicted by
            the teacher, at the logits' resolution.
        sizes: neighbour distances ``d``; 8 neighbours each.
        margin: the separating margin ``m`` of eq. 2.
        sample_weight: ``(batch,)``, 1 for a sample whose pixels count as centres and 0 for
            one left out (see the module docstring); ``None`` counts every sample.

    Returns:
        ``(positive, negative)``, each ``(len(sizes), classes)``: entry ``[s, c]`` is the sum of
        :math:`W_{ij}` over :math:`P_+^s` (respectively of :math:`\max(0, m - W_{ij})` over
        :math:`P_-^s`) restricted to centres of teacher class ``c``, divided by the number of
        pairs in :math:`P_+^s` (respectively :math:`P_-^s`) of every class.
    """
    sizes = _check_sizes(sizes)
    student_logits = floating(student_logits)
    check_rank(student_logits, 4, "student_logits")
    labels = int_labels(teacher_labels)
    if tuple(labels.shape[1:]) != tuple(student_logits.shape[1:3]):
        raise ValueError(
            f"teacher_labels {tuple(labels.shape)} must match the student logits' grid "
            f"{tuple(student_logits.shape)}"
        )
    num_classes = student_logits.shape[-1]
    log_probs = ops.clip(ops.log_softmax(student_logits, axis=-1), math.log(PROBABILITY_FLOOR), 0.0)
    probs = ops.exp(log_probs)
    one_hot = ops.one_hot(labels, num_classes, dtype=student_logits.dtype)
    centre_weights = (
        None if sample_weight is None else sample_weights(sample_weight, student_logits)
    )
    positive, negative = zip(
        *(
            _affinity_terms_at_size(probs, log_probs, labels, one_hot, size, margin, centre_weights)
            for size in sizes
        ),
        strict=True,
    )
    return ops.stack(positive), ops.stack(negative)


def affinity_loss(
    student_logits: Tensor,
    teacher_labels: Tensor,
    sizes: Sequence[int] = (1, 2, 3),
    margin: float = 3.0,
    class_weights: Tensor | None = None,
    sample_weight: Tensor | None = None,
) -> Tensor:
    r"""Adaptive affinity loss :math:`L_{AA}` (paper eqs. 1-4, weighted over sizes as AAF).

    See the module docstring for the conventions (neighbourhood, clipping, borders, empty
    sets, how sizes and classes are weighted).

    Args:
        student_logits: ``(batch, H, W, classes)`` student logits.
        teacher_labels: ``(batch, H, W)`` (or ``(batch, H, W, 1)``) integer labels predicted by
            the teacher (e.g. ``argmax`` of its logits), at the logits' resolution.
        sizes: neighbour distances ``d``; 8 neighbours each. Default AAF's 1, 2 and 3.
        margin: the separating margin ``m`` of eq. 2; AAF's 3.0 by default.
        class_weights: ``(len(sizes), classes)`` weights :math:`w_{s,c}`; ``None`` gives
            ``1 / len(sizes)`` everywhere. :class:`AdaptiveAffinity` learns them.
        sample_weight: ``(batch,)``, 1 for a sample that counts and 0 for one left out;
            ``None`` counts every sample.

    Returns:
        A scalar.
    """
    sizes = _check_sizes(sizes)
    positive, negative = affinity_terms(
        student_logits, teacher_labels, sizes, margin, sample_weight
    )
    if class_weights is None:
        return ops.sum(positive + negative) / len(sizes)
    class_weights = ops.cast(class_weights, positive.dtype)
    if tuple(class_weights.shape) != tuple(positive.shape):
        raise ValueError(
            f"class_weights must have shape (len(sizes), classes) = {tuple(positive.shape)}, "
            f"got {tuple(class_weights.shape)}"
        )
    return ops.sum(class_weights * (positive + negative))


@keras.saving.register_keras_serializable(package="napari_kdseg")
class AdaptiveAffinity(keras.layers.Layer):
    r""":func:`affinity_loss` with size weights learned adversarially, as AAF's minimax.

    The layer owns trainable ``size_logits`` of shape ``(len(sizes), num_classes)``, zero at
    the start; the weights are their softmax over the sizes, so for every class they are
    positive and sum to 1 (AAF's ``tf.nn.softmax(w_edge)`` over its 3 sizes). AAF solves

    .. math::

        \min_{\text{network}} \max_{w} \; L_{AA}(w)

    by applying the negated gradient to ``w`` (``grads_aaf = [-g for g in grads_aaf]``). Here
    the reversal is inside the layer: the weights pass a gradient-reversal identity,
    ``stop_gradient(2 z) - z`` (value ``z``, gradient ``-1``), so one optimiser minimising the
    total loss moves the student down the loss and the size weights up it: mass goes to the
    neighbourhood sizes whose affinities the student gets most wrong, for each class.

    ``call(student_logits, teacher_labels, sample_weight=None)`` returns the scalar loss (of
    the samples weighted 1 alone, given ``sample_weight``).

    Args:
        num_classes: number of classes of the logits.
        sizes: neighbour distances; see :func:`affinity_loss`.
        margin: the separating margin ``m``.
        **kwargs: as :class:`keras.layers.Layer`; ``dtype`` defaults to float32, as the loss
            needs its range whatever the global policy.
    """

    def __init__(
        self,
        num_classes: int,
        sizes: Sequence[int] = (1, 2, 3),
        margin: float = 3.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.sizes = _check_sizes(sizes)
        self.margin = float(margin)
        self.size_logits = self.add_weight(
            shape=(len(self.sizes), self.num_classes),
            initializer="zeros",
            trainable=True,
            name="size_logits",
        )
        self.built = True

    @property
    def size_weights(self) -> Tensor:
        """The current weights :math:`w_{s,c}`, ``(len(sizes), num_classes)``; columns sum to 1."""
        return ops.softmax(self.size_logits, axis=0)

    def call(
        self, student_logits: Tensor, teacher_labels: Tensor, sample_weight: Tensor | None = None
    ) -> Tensor:
        # forward: the logits themselves; backward: their gradient negated (ascent)
        reversed_logits = ops.stop_gradient(2.0 * self.size_logits) - self.size_logits
        return affinity_loss(
            student_logits,
            teacher_labels,
            self.sizes,
            self.margin,
            class_weights=ops.softmax(reversed_logits, axis=0),
            sample_weight=sample_weight,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "sizes": list(self.sizes),
            "margin": self.margin,
        }


class AffinityTerm(DistillationTerm):
    """AAM as a distillation term: :class:`AdaptiveAffinity` of the student's logits, pairs
    split by the teacher's predicted labels (the argmax of its logits)."""

    def __init__(self, config: DistillationConfig, num_classes: int, **kwargs: Any) -> None:
        super().__init__(config, num_classes, **kwargs)
        self.affinity = AdaptiveAffinity(
            num_classes=num_classes, sizes=config.affinity_sizes, margin=config.affinity_margin
        )

    def call(
        self,
        student: dict[str, Tensor],
        teacher: dict[str, Tensor],
        sample_weight: Tensor | None = None,
    ) -> Tensor:
        return self.affinity(
            student["logits"], ops.argmax(teacher["logits"], axis=-1), sample_weight=sample_weight
        )
