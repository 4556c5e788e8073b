"""Does the ONNX graph compute what the Keras model computes? Both run on the same inputs.

Most architectures are continuous functions of their input, so float32 rounding (the two
runtimes sum convolutions in different orders) moves their logits by about 1e-6 and a plain
maximum difference is the whole check. ENet is not: its max-unpooling sends each value to
the arg-max of a 2x2 window of an encoder tensor, and where two entries of a window tie to
within rounding (flat image regions make exact ties common) the runtimes may pick different
pixels, which moves a logit by O(1) however faithful the conversion is. So for models with
:class:`~napari_kdseg.models.enet.MaxUnpooling2D` layers the check runs the ONNX graph twice:

- as is, with extra outputs for its switches: every window where its choice differs from
  Keras's must be a tie, i.e. its two largest entries in Keras lie within the tolerance;
- with the switches pinned to Keras's (the switch tensors become graph inputs): the logits
  must then agree within the tolerance, which checks every other operator of the graph.

The reported ``max_abs_difference`` is the pinned one; the end-to-end difference, the
number of switch flips and the share of pixels whose predicted class agrees are reported
beside it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.inference.onnx_runtime import CPU, open_session, session_options


class ExportError(KdsegDataError):
    """An export that cannot be made or that failed its own check; names the file."""


@dataclass(frozen=True)
class Comparison:
    """ONNX Runtime against Keras on the same inputs (logits; switches as described above)."""

    max_abs_difference: float
    end_to_end_max_abs_difference: float
    switch_flips: int
    flips_at_clear_maxima: int
    label_agreement: float

    def passed(self, tolerance: float) -> bool:
        return self.max_abs_difference <= tolerance and self.flips_at_clear_maxima == 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _KerasReference:
    logits: npt.NDArray[np.float32]
    switches: dict[str, npt.NDArray[np.float32]]  # unpooling layer name -> one-hot switches
    window_gaps: dict[str, npt.NDArray[np.float32]]  # largest minus second-largest entry


def compare_with_keras(
    network: Any,
    model: onnx.ModelProto,
    inputs: npt.NDArray[np.float32],
    tolerance: float,
    where: Path | str,
    threads: int | None = None,
    batch_size: int = 8,
) -> Comparison:
    """Run ``network`` (Keras) and ``model`` (ONNX Runtime on the CPU, with the session
    options ``kdseg segment`` uses) on ``inputs`` and compare; ``where`` names the export in
    errors."""
    reference = _keras_reference(network, inputs, batch_size)
    switch_tensors = {layer: _switch_tensor(model, layer, where) for layer in reference.switches}
    session = open_session(
        _with_outputs(model, list(switch_tensors.values())).SerializeToString(),
        session_options(threads),
        [CPU],
    )
    input_name = session.get_inputs()[0].name
    outputs = session.run(None, {input_name: inputs})
    logits, own_switches = outputs[0], dict(zip(switch_tensors, outputs[1:], strict=True))

    flips = clear_flips = 0
    for layer, switches in own_switches.items():
        differs = np.argmax(switches, axis=-1) != np.argmax(reference.switches[layer], axis=-1)
        flips += int(differs.sum())
        clear_flips += int(np.sum(differs & (reference.window_gaps[layer] > tolerance)))

    pinned = logits
    if switch_tensors:
        pinned_model = _pinned(model, list(switch_tensors.values()))
        pinned_session = open_session(
            pinned_model.SerializeToString(), session_options(threads), [CPU]
        )
        feeds = {input_name: inputs} | {
            switch_tensors[layer]: switches for layer, switches in reference.switches.items()
        }
        pinned = pinned_session.run(None, feeds)[0]

    return Comparison(
        max_abs_difference=float(np.max(np.abs(pinned - reference.logits))),
        end_to_end_max_abs_difference=float(np.max(np.abs(logits - reference.logits))),
        switch_flips=flips,
        flips_at_clear_maxima=clear_flips,
        label_agreement=float(
            np.mean(np.argmax(logits, axis=-1) == np.argmax(reference.logits, axis=-1))
        ),
    )


def _keras_reference(
    network: Any, inputs: npt.NDArray[np.float32], batch_size: int
) -> _KerasReference:
    """Keras logits and, for each max-unpooling layer, its switches and window gaps."""
    import keras

    from napari_kdseg.models.enet import MaxUnpooling2D

    unpooling = [layer for layer in network.layers if isinstance(layer, MaxUnpooling2D)]
    probe = keras.Model(
        network.inputs, [network.outputs[0], *(layer.input[1] for layer in unpooling)]
    )
    chunks = []
    for start in range(0, len(inputs), batch_size):
        outputs = probe.predict_on_batch(inputs[start : start + batch_size])
        chunks.append(outputs if unpooling else [outputs])  # one output comes unwrapped
    logits = np.concatenate([keras.ops.convert_to_numpy(chunk[0]) for chunk in chunks])
    switches, gaps = {}, {}
    for index, layer in enumerate(unpooling, start=1):
        pooled_from = np.concatenate([keras.ops.convert_to_numpy(chunk[index]) for chunk in chunks])
        switches[layer.name] = keras.ops.convert_to_numpy(MaxUnpooling2D.switches(pooled_from))
        ranked = np.sort(_windows(pooled_from), axis=-1)
        gaps[layer.name] = ranked[..., -1] - ranked[..., -2]
    return _KerasReference(logits.astype(np.float32), switches, gaps)


def _windows(pooled_from: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``(n, rows, cols, channels, 4)``: the 2x2 windows, as ``MaxUnpooling2D.switches``."""
    n, height, width, channels = pooled_from.shape
    windows = pooled_from.reshape(n, height // 2, 2, width // 2, 2, channels)
    return windows.transpose(0, 1, 3, 5, 2, 4).reshape(n, height // 2, width // 2, channels, 4)


def _switch_tensor(model: onnx.ModelProto, layer: str, where: Path | str) -> str:
    """Name of the ONNX tensor holding the switches of unpooling ``layer``.

    tf2onnx keeps TensorFlow's op names, which nest inside the layer's name scope; the
    switches are the one product of two casts there (``is_maximum * first`` in
    ``_first_maximum``).
    """
    scope = re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/")
    producers = {output: node for node in model.graph.node for output in node.output}
    candidates = [
        node.output[0]
        for node in model.graph.node
        if node.op_type == "Mul"
        and scope.search(node.name)
        and all(name in producers and producers[name].op_type == "Cast" for name in node.input)
    ]
    if len(candidates) != 1:
        raise ExportError(
            where,
            f"found {len(candidates)} candidates for the switches of max-unpooling layer "
            f"{layer!r} in the ONNX graph (expected 1), so the check cannot pin them",
        )
    return candidates[0]


def _with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the float tensors ``tensors`` (or ``model``
    itself when there are none: teachers are hundreds of megabytes)."""
    if not tensors:
        return model
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    for name in tensors:
        extended.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    return extended


def _pinned(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` where ``tensors`` are graph inputs instead of computed.

    Nodes that only fed the pinned tensors are dropped, with the initialisers they used.
    """
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    graph = pinned.graph
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output) and not set(node.output) & set(tensors):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used_initialisers = [tensor for tensor in graph.initializer if tensor.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used_initialisers)
    graph.input.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in tensors
    )
    return pinned
