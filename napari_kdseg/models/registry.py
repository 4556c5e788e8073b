"""Build any of the five architectures by name, and reach their intermediate features.

=============  =========  ====================================================================
name           role       feature taps: name (stride, channels at width 1)
=============  =========  ====================================================================
enet           student    encoder (8, 128), decoder (2, 16)
espnet         student    encoder (8, 256), decoder (2, num_classes)
erfnet         student    encoder (8, 128), decoder (2, 16)
unetpp         teacher    encoder (16, 1024), decoder (1, 64); head_1..4 (1, num_classes) with
                          deep supervision
deeplabv3plus  teacher    low_level (4, 256), backbone (8, 2048), encoder (8, 256),
                          decoder (4, 256)
=============  =========  ====================================================================

Every model takes ``(batch, H, W, channels)`` (one MRI slice or ``k`` neighbouring ones) and
returns float32 logits ``(batch, H, W, num_classes)`` from a layer named ``logits``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from napari_kdseg import architectures
from napari_kdseg.models import deeplabv3plus, enet, erfnet, espnet, unetpp
from napari_kdseg.models._common import LOGITS_LAYER

STUDENTS = tuple(architectures.STUDENTS)
TEACHERS = tuple(architectures.TEACHERS)
MODEL_NAMES = architectures.MODEL_NAMES

#: The paper's Table 1: parameters and "Flops" (2 x multiply-accumulates) at 384 x 384.
PAPER_TABLE1: dict[str, dict[str, int]] = {
    "espnet": {"params": 183_000, "flops": 1_270_000_000},
    "enet": {"params": 353_000, "flops": 2_200_000_000},
    "erfnet": {"params": 2_060_000, "flops": 16_560_000_000},
    "unetpp": {"params": 36_600_000, "flops": 621_380_000_000},
    "deeplabv3plus": {"params": 56_800_000, "flops": 273_940_000_000},
}

_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "enet": enet.build_enet,
    "espnet": espnet.build_espnet,
    "erfnet": erfnet.build_erfnet,
    "unetpp": unetpp.build_unetpp,
    "deeplabv3plus": deeplabv3plus.build_deeplabv3plus,
}
_FEATURE_TAPS: dict[str, dict[str, str]] = {
    "enet": enet.FEATURE_TAPS,
    "espnet": espnet.FEATURE_TAPS,
    "erfnet": erfnet.FEATURE_TAPS,
    "unetpp": unetpp.FEATURE_TAPS,
    "deeplabv3plus": deeplabv3plus.FEATURE_TAPS,
}


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int = 2,
    width: float = 1.0,
    **options: Any,
) -> keras.Model:
    """A freshly initialised ``name`` model for ``input_shape = (H, W, channels)``.

    ``width`` scales every channel count (0.25 for CPU-sized experiments); ``options`` are
    the architecture's own: ``p``, ``q`` (espnet), ``deep_supervision`` (unetpp),
    ``refine_convs``, ``pretrained`` (deeplabv3plus).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if num_classes < 1:
        raise ValueError(f"{name}: num_classes must be >= 1, got {num_classes}")
    return _BUILDERS[name](input_shape, num_classes, width, **options)


def feature_taps(model: keras.Model) -> dict[str, str]:
    """Tap name -> layer name for the intermediate features ``model`` exposes."""
    if model.name not in _FEATURE_TAPS:
        raise ValueError(
            f"{model.name!r} is not one of the architectures ({', '.join(MODEL_NAMES)}); "
            "build it with build_model"
        )
    present = {layer.name for layer in model.layers}
    return {tap: layer for tap, layer in _FEATURE_TAPS[model.name].items() if layer in present}


def with_features(model: keras.Model, taps: Sequence[str] = ("encoder", "decoder")) -> keras.Model:
    """The same network (same weights) returning ``{"logits": ..., tap: ...}`` for each tap."""
    available = feature_taps(model)
    unknown = [tap for tap in taps if tap not in available]
    if unknown:
        raise ValueError(
            f"{model.name} has no feature tap {unknown}; it has {', '.join(available)}"
        )
    outputs = {"logits": model.get_layer(LOGITS_LAYER).output}
    outputs |= {tap: model.get_layer(available[tap]).output for tap in taps}
    return keras.Model(model.input, outputs, name=f"{model.name}_features")
