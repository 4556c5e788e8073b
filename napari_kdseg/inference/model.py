"""A trained segmentation model ready for inference, with the card that says how to feed it.

``.keras`` files (Keras, any backend) carry their card in the JSON file beside them, as
training writes it; ONNX files carry it in their metadata. Either way the preprocessing is
read from the card, never re-typed by the user.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.data.preprocess import PreprocessConfig

CARD_FORMAT = "napari-kdseg model card 1"
#: Key of the model card (JSON) in an exported ONNX file's ``metadata_props``.
CARD_METADATA_KEY = "napari_kdseg.card"

Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


class ModelFileError(KdsegDataError):
    """A model file that cannot be used, with the file named."""


@dataclass
class SegmentationModel:
    """``predict`` maps a batch ``(n, size, size, channels)`` to logits ``(n, size, size, k)``."""

    path: Path
    card: dict[str, Any]
    predict: Predict
    runtime: str

    @property
    def preprocess(self) -> PreprocessConfig:
        return preprocess_from_card(self.card, self.path)

    @property
    def class_names(self) -> list[str]:
        return list(self.card.get("class_names", ["background", "prostate"]))


def preprocess_from_card(card: dict[str, Any], where: Path | str) -> PreprocessConfig:
    """The preprocessing the model was trained with, as its card records it."""
    settings = card.get("preprocess")
    if not isinstance(settings, dict):
        raise ModelFileError(where, "model card has no 'preprocess' section")
    try:
        return PreprocessConfig(
            size=int(settings["size"]),
            context=int(settings["context"]),
            orientation=str(settings.get("orientation", "LPS")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(where, f"model card has an unusable 'preprocess': {error}") from error


def card_path_for(model_path: Path) -> Path:
    """Where training writes the card of ``model.keras``: ``model.json`` beside it."""
    return model_path.with_suffix(".json")


def read_keras_card(model_path: Path) -> dict[str, Any]:
    path = card_path_for(model_path)
    if not path.is_file():
        raise ModelFileError(
            model_path, f"no model card beside it (expected {path.name}, written by training)"
        )
    try:
        text = path.read_text()
    except OSError as error:
        raise ModelFileError(path, f"unreadable model card: {error}") from error
    return parse_card(text, path)


def parse_card(text: str, where: Path | str) -> dict[str, Any]:
    """The model card in ``text`` (JSON), checked to be a napari-kdseg card."""
    try:
        card = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelFileError(where, f"unreadable model card: {error}") from error
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ModelFileError(where, f"not a napari-kdseg model card (format {found!r})")
    return card


def load_keras(path: Path, batch_size: int = 16) -> SegmentationModel:
    """A ``.keras`` model; imports Keras (and so its backend) only when called."""
    import keras

    import napari_kdseg.models  # noqa: F401  (registers the custom layers for deserialising)

    card = read_keras_card(path)
    try:
        network = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise ModelFileError(path, f"cannot load the Keras model: {error}") from error

    def predict(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        outputs = []
        for start in range(0, len(batch), batch_size):
            chunk = batch[start : start + batch_size]
            # A short last chunk is padded: a new batch size would retrace the predict graph.
            padded = np.zeros((batch_size, *chunk.shape[1:]), dtype=np.float32)
            padded[: len(chunk)] = chunk
            logits = keras.ops.convert_to_numpy(network.predict_on_batch(padded))
            outputs.append(logits[: len(chunk)])
        return np.concatenate(outputs).astype(np.float32)

    return SegmentationModel(path, card, predict, runtime=f"keras/{keras.backend.backend()}")


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
