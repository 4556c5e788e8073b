"""A trained segmentation model ready for inference, with the card that says how to feed it.

``.keras`` files (Keras, any backend) carry their card in the JSON file beside them, as
training writes it; ONNX files carry it in their metadata. Either way the preprocessing is
read from the card, never re-typed by the user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_kdseg.card import CLASS_NAMES, ModelCard, ModelFileError
from napari_kdseg.data.preprocess import PreprocessConfig

Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@dataclass
class SegmentationModel:
    """``predict`` maps a batch ``(n, size, size, channels)`` to logits ``(n, size, size, k)``.

    ``card`` is the model card as JSON data (see :class:`~napari_kdseg.card.ModelCard`).
    """

    path: Path
    card: dict[str, Any]
    predict: Predict
    runtime: str

    @cached_property
    def model_card(self) -> ModelCard:
        return ModelCard.from_json(self.card, self.path)

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.model_card.preprocess

    @property
    def class_names(self) -> list[str]:
        names = self.model_card.class_names
        return list(CLASS_NAMES if names is None else names)


def load_keras(path: Path, batch_size: int = 16) -> SegmentationModel:
    """A ``.keras`` model; imports Keras (and so its backend) only when called."""
    import keras

    import napari_kdseg.models  # noqa: F401  (registers the custom layers for deserialising)

    card = ModelCard.read_beside(path)
    try:
        network = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise ModelFileError(path, f"cannot load the Keras model: {error}") from error
    card.check_input_shape(network.input_shape, path)

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

    runtime = f"keras/{keras.backend.backend()}"
    return SegmentationModel(path, card.to_json(), predict, runtime=runtime)
