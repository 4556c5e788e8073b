"""Fixtures of the viewer tests: ONNX models built with ``onnx.helper``, never TensorFlow."""

from __future__ import annotations

from pathlib import Path

import pytest
from toy_onnx import HEAVY_SIZE, threshold_onnx

from napari_kdseg.library import LIBRARY_ENV


@pytest.fixture(scope="session")
def model_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model library folder holding the stand-in model (64 x 64 grid) and a broken file."""
    folder = tmp_path_factory.mktemp("model_library")
    threshold_onnx(folder / "threshold.onnx")
    (folder / "broken.onnx").write_bytes(b"not an onnx file")
    return folder


@pytest.fixture(scope="session")
def heavy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in at 256 x 256 with student-sized convolutions (outside the library)."""
    return threshold_onnx(
        tmp_path_factory.mktemp("heavy") / "heavy.onnx", HEAVY_SIZE, heavy_channels=48
    )


@pytest.fixture
def library_env(model_library: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the panel's model library at :func:`model_library`."""
    monkeypatch.setenv(LIBRARY_ENV, str(model_library))
    return model_library
