"""Teachers from outside the project: pretrained models run with their own pipelines.

:mod:`napari_kdseg.teachers.taps` runs TAPS (``lavlab-taps``, a 3D prostate model) on ONNX
Runtime. Nothing in this package imports Keras, TensorFlow, PyTorch or Qt.
"""
