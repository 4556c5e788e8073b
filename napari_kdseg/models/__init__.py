"""The five segmentation architectures of the paper, in Keras 3 layers and ``keras.ops``.

Students ENet, ESPNet, ERFNet and teachers UNet++, DeepLabV3+ (paper section 3, Table 1), one
module each, built by name with :func:`build_model`; :func:`with_features` exposes the
intermediate features distillation needs, :mod:`~napari_kdseg.models.complexity` counts
parameters and FLOPs. Backend-agnostic: no TensorFlow call anywhere in this package.
"""

from napari_kdseg.models.complexity import count_flops, count_params, model_table
from napari_kdseg.models.registry import (
    MODEL_NAMES,
    PAPER_TABLE1,
    STUDENTS,
    TEACHERS,
    build_model,
    feature_taps,
    with_features,
)

__all__ = [
    "MODEL_NAMES",
    "PAPER_TABLE1",
    "STUDENTS",
    "TEACHERS",
    "build_model",
    "count_flops",
    "count_params",
    "feature_taps",
    "model_table",
    "with_features",
]
