"""ONNX stand-ins for trained students, written with ``onnx.helper``: no TensorFlow.

The viewer process must not import TensorFlow (see ``tests/conftest.py``), so the models the
panels run in the viewer tests are hand-written graphs, not exported students.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from napari_kdseg.card import CARD_METADATA_KEY

#: Model grid of the stand-in models (the phantom layers of the tests use the same size).
TOY_SIZE = 64
HEAVY_SIZE = 256


def toy_card(size: int, architecture: str) -> dict:
    """A model card in the format ``kdseg export`` writes (the fields the loaders read)."""
    return {
        "format": "napari-kdseg model card 1",
        "architecture": architecture,
        "input": {"size": size, "channels": 3, "layout": "NHWC"},
        "preprocess": {"size": size, "context": 3, "orientation": "LPS"},
        "class_names": ["background", "prostate"],
        "training_sites": ["A", "B", "C", "D", "E"],
        "metrics": {"best_val_dice": 0.5},
    }


def centred_ellipse(size: int) -> np.ndarray:
    """1 inside an ellipse around the grid centre (where the phantom's gland lies), else 0."""
    rows, cols = np.mgrid[:size, :size].astype(np.float32) + 0.5
    inside = ((rows / size - 0.5) / 0.11) ** 2 + ((cols / size - 0.5) / 0.16) ** 2 <= 1
    return inside.astype(np.float32)[None, :, :, None]


def threshold_onnx(
    path: Path,
    size: int = TOY_SIZE,
    heavy_channels: int = 0,
    card_size: int | None = None,
    training_data: list[dict] | None = None,
    card_sections: dict | None = None,
) -> Path:
    """A thresholding stand-in for a trained student, so the panel mechanics are tested
    without TensorFlow.

    Input ``image`` (batch, size, size, 3) float32 NHWC as exported students take it; output
    logits (batch, size, size, 2): background 0, prostate ``6 (ellipse - 0.5) + 0.5 x_c``,
    where ``ellipse`` is a constant centred ellipse and ``x_c`` the z-scored centre slice. So
    the prediction is roughly the centre of every slice, nudged by brightness: not a good
    segmentation, but a non-trivial one.

    ``heavy_channels`` > 0 adds two 3x3 convolutions of that width whose output is scaled by
    1e-6 and added to the prostate logit: it leaves the prediction alone and makes inference
    cost about as much as a real student, for the responsiveness test. ``card_size`` writes
    another grid size into the card than the graph has: a broken export. ``training_data``
    goes into the card as training writes it (where each site's scans came from);
    ``card_sections`` replace or add sections of the card (a student's architecture and
    teacher, say).
    """
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", size, size, 3])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", size, size, 2])
    constants = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [1]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [2]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [3]),
        helper.make_tensor("brightness", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        numpy_helper.from_array(6.0 * (centred_ellipse(size) - 0.5), "prior"),
    ]
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["centre"]),
        helper.make_node("Mul", ["centre", "brightness"], ["bright"]),
        helper.make_node("Add", ["bright", "prior"], ["prostate_logit"]),
        helper.make_node("Mul", ["centre", "zero"], ["background"]),
    ]
    prostate = "prostate_logit"
    if heavy_channels:
        rng = np.random.default_rng(0)
        constants += [
            numpy_helper.from_array(
                rng.normal(0, 0.1, (heavy_channels, 3, 3, 3)).astype(np.float32), "w1"
            ),
            numpy_helper.from_array(
                rng.normal(0, 0.1, (heavy_channels, heavy_channels, 3, 3)).astype(np.float32),
                "w2",
            ),
            helper.make_tensor("tiny", TensorProto.FLOAT, [], [1e-6]),
        ]
        nodes += [
            helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["nchw", "w1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("ReduceMean", ["c2"], ["m"], axes=[1], keepdims=1),
            helper.make_node("Transpose", ["m"], ["nhwc"], perm=[0, 2, 3, 1]),
            helper.make_node("Mul", ["nhwc", "tiny"], ["small"]),
            helper.make_node("Add", ["prostate_logit", "small"], ["prostate_heavy"]),
        ]
        prostate = "prostate_heavy"
    nodes.append(helper.make_node("Concat", ["background", prostate], ["logits"], axis=3))
    graph = helper.make_graph(nodes, "threshold", [image], [logits], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    architecture = "threshold stand-in"
    if heavy_channels:
        architecture += f" (+{heavy_channels}-channel convolutions)"
    card = toy_card(card_size or size, architecture)
    if training_data is not None:
        card["training_data"] = training_data
    card |= card_sections or {}
    helper.set_model_props(model, {CARD_METADATA_KEY: json.dumps(card)})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
