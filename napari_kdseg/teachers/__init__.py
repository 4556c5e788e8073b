"""Teachers from outside the project: pretrained models run with their own pipelines.

:mod:`napari_kdseg.teachers.taps` runs TAPS (``lavlab-taps``, a 3D prostate model) on ONNX
Runtime. Nothing in this package imports Keras, TensorFlow, PyTorch or Qt.
"""

from __future__ import annotations

#: The teacher spec that names TAPS (``kdseg distill --teacher taps``).
TAPS = "taps"
TAPS_DISTRIBUTION = "lavlab-taps"
TAPS_VERSION = "1.1.2"
#: How the model card names TAPS.
TAPS_DESCRIPTION = f"TAPS ({TAPS_DISTRIBUTION} {TAPS_VERSION}, ONNX)"
#: Where TAPS comes from, in plain words (the panel and the help show it).
TAPS_PROVENANCE = (
    "a 3D prostate model trained on real prostate MRI by its authors; MIT licence; "
    f"PyPI package {TAPS_DISTRIBUTION} {TAPS_VERSION}, run here on ONNX Runtime"
)
