"""Exported ``.onnx`` models in ONNX Runtime: the card from the file's metadata, no TensorFlow.

This module never imports Keras or TensorFlow (a test checks ``sys.modules``), so napari's
process and the ``kdseg segment`` command can load it next to an OpenGL canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from napari_kdseg.card import ModelCard, ModelFileError
from napari_kdseg.inference.model import SegmentationModel

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def default_providers() -> list[str]:
    """CUDA first when this ONNX Runtime build has it (``onnxruntime-gpu``), then the CPU."""
    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


def default_batch_size(provider: str) -> int:
    """Slices per ONNX Runtime call: 16 on a GPU; 1 on the CPU, where the students are
    memory-bound and one slice's activations stay in cache (one thread ran ENet at 79 ms per
    slice one at a time against 96 ms in batches of 8 on the development machine;
    bench/README.md)."""
    return 1 if provider == CPU else 16


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Operators run one after another, each on ``threads`` cores (None: ORT's default, one
    per physical core); every graph optimisation on.

    Idle worker threads sleep instead of spinning: on a machine shared with other work (or
    with napari's own threads) spinning workers steal the cores the busy ones need, which
    made 2-thread ENet inference 2x slower on the 2-core development machine
    (bench/README.md).
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: unused-initializer warnings are noise
    return options


def open_session(
    model: str | Path | bytes,
    options: ort.SessionOptions | None = None,
    providers: Sequence[str] | None = None,
) -> ort.InferenceSession:
    """An inference session on a file or serialised model (default :func:`session_options`).

    Export checks its result through this same function, so the check sees the runtime that
    ``kdseg segment`` and the viewer use.
    """
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(
        source, options or session_options(), providers=list(providers or default_providers())
    )


def read_onnx_card(session: ort.InferenceSession, where: Path | str) -> ModelCard:
    """The model card embedded by ``kdseg export``, checked against the graph's input."""
    card = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map, where)
    card.check_input_shape(session.get_inputs()[0].shape, where, what="graph input")
    return card


def load_onnx(
    path: str | Path,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> SegmentationModel:
    """An exported model in ONNX Runtime; ``predict`` runs ``batch_size`` slices per call.

    ``threads`` sets ONNX Runtime's intra-op threads; ``providers`` defaults to CUDA when
    available, else the CPU. ``batch_size`` defaults to :func:`default_batch_size`.
    """
    path = Path(path)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    options = session_options(threads)
    try:
        session = open_session(path, options, providers)
    except Exception as error:  # ORT raises its own types for every kind of bad file
        raise ModelFileError(path, f"not a usable ONNX model: {error}") from error
    card = read_onnx_card(session, path)
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    provider = session.get_providers()[0]
    batch_size = batch_size or default_batch_size(provider)

    def predict(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        outputs = [
            session.run([output_name], {input_name: batch[start : start + batch_size]})[0]
            for start in range(0, len(batch), batch_size)
        ]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    used = session.get_session_options().intra_op_num_threads
    runtime = f"onnxruntime {ort.__version__}, {provider}, " + (
        f"{used} thread(s)" if used else "default threads"
    )
    runtime += f", {batch_size} slice(s) per call"
    return SegmentationModel(path, card.to_json(), predict, runtime=runtime)
