"""Export trained models for inference outside the training environment.

:func:`export_onnx` converts a ``.keras`` model to ONNX with its card embedded and checks
the result against Keras. This package imports TensorFlow (when exporting); the runtime side
lives in :mod:`napari_kdseg.inference.onnx_runtime`, which never does.
"""

from napari_kdseg.export.check import Comparison, ExportError
from napari_kdseg.export.onnx_export import DEFAULT_OPSET, ExportReport, export_onnx

__all__ = ["DEFAULT_OPSET", "Comparison", "ExportError", "ExportReport", "export_onnx"]
