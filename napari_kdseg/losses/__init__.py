r"""The losses of the paper, in ``keras.ops`` only (TensorFlow, JAX and PyTorch backends).

Loussaief, Ayad, Puig and Rashwan, "Adaptive Affinity-Based Generalization For MRI Imaging
Segmentation Across Resource-Limited Settings", section 2. The student is trained with

.. math::

    L_{Total} = L_{Seg} + \lambda_1 L_{Logits} + \lambda_2 L_{KM} + \lambda_3 L_{AA}    \quad (8)

with :math:`\lambda_1, \lambda_2, \lambda_3 = 0.2, 0.9, 0.9` (:data:`PAPER_LAMBDAS`):

- :mod:`~napari_kdseg.losses.segmentation`: :math:`L_{Seg}`, Dice plus focal or
  cross-entropy against the ground truth;
- :mod:`~napari_kdseg.losses.logits`: :math:`L_{Logits}`, the Logits Module (eq. 7);
- :mod:`~napari_kdseg.losses.kernel_matrix`: :math:`L_{KM}`, the Kernel Matrix Module
  (eqs. 5-6), with its trainable 1x1 adapter;
- :mod:`~napari_kdseg.losses.affinity`: :math:`L_{AA}`, the Adaptive Affinity Module
  (eqs. 1-4), with its adversarially learned size weights.

Each relation loss also comes as a distillation term (:class:`LogitsTerm`,
:class:`KernelMatrixTerm`, :class:`AffinityTerm`), the form the Distiller adds up; the
terms are registered in :mod:`napari_kdseg.distillation.terms`.

Inputs are channels-last: logits ``(batch, H, W, classes)``, features
``(batch, h, w, channels)``, labels ``(batch, H, W)`` integers.
"""

from napari_kdseg.distillation.terms import paper_lambdas
from napari_kdseg.losses.affinity import (
    AdaptiveAffinity,
    AffinityTerm,
    affinity_loss,
    affinity_terms,
)
from napari_kdseg.losses.kernel_matrix import (
    KernelMatrixAdapter,
    KernelMatrixTerm,
    kernel_matrix,
    kernel_matrix_loss,
)
from napari_kdseg.losses.logits import LogitsLoss, LogitsTerm, logits_kl
from napari_kdseg.losses.segmentation import (
    SegmentationLoss,
    cross_entropy,
    dice_loss,
    focal_loss,
)

#: The weights of eq. 8 (paper section 2, "empirically set").
PAPER_LAMBDAS = paper_lambdas()

__all__ = [
    "PAPER_LAMBDAS",
    "AdaptiveAffinity",
    "AffinityTerm",
    "KernelMatrixAdapter",
    "KernelMatrixTerm",
    "LogitsLoss",
    "LogitsTerm",
    "SegmentationLoss",
    "affinity_loss",
    "affinity_terms",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "kernel_matrix",
    "kernel_matrix_loss",
    "logits_kl",
]
