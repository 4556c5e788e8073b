"""``kdseg export``: a trained ``.keras`` model to one self-describing ONNX file.

tf2onnx converts the graph (dynamic batch, NHWC input ``image``, logits ``logits``); the
model card travels in the file's ``metadata_props`` under ``napari_kdseg.card``, with the
result of the export's own check added to it. The check runs ONNX Runtime and Keras on real
inputs (a scan the caller gives, else a phantom case of a training site, preprocessed with
the card's preprocessing, plus one slice of noise) and fails the export when their logits
differ by more than the tolerance (see :mod:`napari_kdseg.export.check` for ENet's
max-unpooling). Nothing is written unless the check and ``onnx.checker`` pass, and then
atomically.

TensorFlow and tf2onnx are imported here only, inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from napari_kdseg import __version__
from napari_kdseg.card import CARD_METADATA_KEY, ModelCard, ModelFileError
from napari_kdseg.core.atomic import atomic_path
from napari_kdseg.data.preprocess import prepare_volume, stack_context
from napari_kdseg.data.volume import Volume
from napari_kdseg.export.check import Comparison, ExportError, compare_with_keras

#: ONNX opset of exported graphs: opset 17 is the newest tf2onnx 1.17 is tested with and
#: every ONNX Runtime since 1.13 runs it.
DEFAULT_OPSET = 17
INPUT_NAME = "image"
BATCH_DIMENSION = "batch"
#: Slices of the check scan (evenly spaced, so background and gland both appear).
CHECK_SLICES = 4


@dataclass(frozen=True)
class ExportReport:
    """What ``export_onnx`` wrote and how closely ONNX Runtime reproduces Keras."""

    path: Path
    comparison: Comparison
    tolerance: float
    check_inputs: str
    checker_passed: bool
    opset: int
    bytes: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def max_abs_difference(self) -> float:
        return self.comparison.max_abs_difference

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"path": str(self.path), "comparison": self.comparison.to_json()}


def export_onnx(
    model_path: str | Path,
    out: str | Path,
    check_inputs: Volume | npt.NDArray[np.float32] | None = None,
    tolerance: float = 1e-4,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    threads: int | None = None,
) -> ExportReport:
    """Convert ``model_path`` (``.keras`` with its card beside it) to ``out`` (``.onnx``).

    ``check_inputs`` is a scan (preprocessed with the card), a ready batch
    ``(n, size, size, channels)``, or None for a phantom case of a training site. Raises
    :class:`ExportError` when ``out`` exists (unless ``overwrite``) or the check fails.
    """
    model_path, out = Path(model_path), Path(out)
    if out.suffix != ".onnx":
        raise ExportError(out, "the exported file's name must end in .onnx")
    if out.exists() and not overwrite:
        raise ExportError(out, "already exists; pass --overwrite to replace it")
    if model_path.suffix != ".keras" or not model_path.is_file():
        raise ModelFileError(model_path, "expected an existing .keras model written by training")
    card = ModelCard.read_beside(model_path)
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    network = _load_keras(model_path, card)
    model = _convert(network, opset)
    seconds["convert"] = time.perf_counter() - started

    started = time.perf_counter()
    inputs, described = _check_batch(check_inputs, card, model_path)
    comparison = compare_with_keras(network, model, inputs, tolerance, model_path, threads)
    seconds["check"] = time.perf_counter() - started
    if not comparison.passed(tolerance):
        raise ExportError(model_path, _failure(comparison, tolerance, described))

    check = {
        "tolerance": tolerance,
        "inputs": described,
        "runtimes": f"onnxruntime {ort.__version__} (CPU) against keras {_keras_version()}",
    } | comparison.to_json()
    converter = {"converter": model.producer_version, "opset": opset}
    _describe(model, card.with_export(converter | {"check": check}))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(model_path, f"the converted graph fails onnx.checker: {error}") from error

    started = time.perf_counter()
    with atomic_path(out) as tmp:
        onnx.save(model, tmp)
    seconds["write"] = time.perf_counter() - started
    return ExportReport(
        path=out,
        comparison=comparison,
        tolerance=tolerance,
        check_inputs=described,
        checker_passed=True,
        opset=opset,
        bytes=out.stat().st_size,
        seconds=seconds,
    )


def _keras_version() -> str:
    """Keras's version and backend (Keras is already imported when this is called)."""
    import keras

    return f"{keras.__version__} ({keras.backend.backend()})"


def _load_keras(model_path: Path, card: ModelCard) -> Any:
    """The Keras model, checked to take the input its card describes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import napari_kdseg.models  # noqa: F401  (registers the custom layers for deserialising)

    try:
        network = keras.saving.load_model(model_path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise ModelFileError(model_path, f"cannot load the Keras model: {error}") from error
    card.check_input_shape(network.input_shape, model_path)
    return network


def _convert(network: Any, opset: int) -> onnx.ModelProto:
    """tf2onnx conversion with a dynamic batch dimension named ``batch``."""
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    signature = (tf.TensorSpec((None, *network.input_shape[1:]), tf.float32, name=INPUT_NAME),)
    model, _ = tf2onnx.convert.from_keras(network, input_signature=signature, opset=opset)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIMENSION
    model.producer_name = "napari-kdseg"
    model.producer_version = f"{__version__} (tf2onnx {tf2onnx.__version__})"
    return model


def _describe(model: onnx.ModelProto, card: ModelCard) -> None:
    """Name the graph, write a doc string and embed ``card`` in the metadata."""
    size, _, channels = card.input_shape
    classes = ", ".join(card.class_names or ())
    model.graph.name = card.architecture or "segmentation"
    model.doc_string = (
        f"napari-kdseg {card.architecture} prostate MRI segmentation. Input "
        f"'{INPUT_NAME}': float32 (batch, {size}, {size}, {channels}), {channels} neighbouring "
        f"slices z-scored over the volume; output logits (batch, {size}, {size}, classes: "
        f"{classes}). The model card (JSON) is in metadata_props['{CARD_METADATA_KEY}']."
    )
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, card.to_metadata())


def _check_batch(
    check_inputs: Volume | npt.NDArray[np.float32] | None,
    card: ModelCard,
    where: Path,
) -> tuple[npt.NDArray[np.float32], str]:
    """The inputs the check runs on, and a line saying what they are."""
    preprocess = card.preprocess
    if isinstance(check_inputs, np.ndarray):
        card.check_input_shape(check_inputs.shape, where, what="check inputs")
        return check_inputs.astype(np.float32), f"{len(check_inputs)} given input(s)"
    if check_inputs is None:
        scan, described = _phantom_scan(card)
    else:
        scan, described = check_inputs, f"scan {check_inputs.source or '<in memory>'}"
    image, _ = prepare_volume(scan, preprocess)
    picks = np.unique(np.linspace(0, image.shape[0] - 1, CHECK_SLICES).round().astype(int))
    slices = [stack_context(image, int(z), preprocess.context) for z in picks]
    noise = np.random.default_rng(0).standard_normal(slices[0].shape, dtype=np.float32)
    described += f", slices {picks.tolist()} preprocessed with the card, and 1 slice of noise"
    return np.stack([*slices, noise]).astype(np.float32), described


def _phantom_scan(card: ModelCard) -> tuple[Volume, str]:
    """Case 0 of the first training site that is a phantom site (else site A)."""
    from napari_kdseg.data.phantom import SITES, make_case
    from napari_kdseg.data.phantom.generate import MIN_SIZE

    site = next((s for s in card.training_sites or () if s in SITES), "A")
    image, _ = make_case(site, 0, size=max(MIN_SIZE, card.preprocess.size), seed=0)
    return image, f"phantom site {site} case 0 (the card names no training data at hand)"


def _failure(comparison: Comparison, tolerance: float, described: str) -> str:
    if comparison.flips_at_clear_maxima:
        return (
            f"ONNX Runtime's max-unpooling switches differ from Keras's at "
            f"{comparison.flips_at_clear_maxima} window(s) with a clear maximum (not float "
            f"ties): the conversion is wrong; checked on {described}"
        )
    return (
        f"ONNX Runtime and Keras logits differ by up to {comparison.max_abs_difference:.3g}, "
        f"more than the tolerance {tolerance:g}; checked on {described}"
    )
