"""One entry point for every model file: ``.keras`` through Keras, ``.onnx`` through ONNX Runtime.

It sits above both runtimes (each builds a :class:`SegmentationModel`), so neither imports the
other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_kdseg.card import ModelFileError
from napari_kdseg.inference.model import SegmentationModel, load_keras


def load_model(path: str | Path, **options: Any) -> SegmentationModel:
    """Load ``.keras`` or ``.onnx`` by suffix; ``options`` go to the runtime's loader."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such model file")
    if path.suffix == ".keras":
        return load_keras(path, **options)
    if path.suffix == ".onnx":
        # ONNX Runtime only: this path never imports Keras or TensorFlow
        from napari_kdseg.inference.onnx_runtime import load_onnx

        return load_onnx(path, **options)
    raise ModelFileError(path, "unknown model format; expected a .keras or .onnx file")
