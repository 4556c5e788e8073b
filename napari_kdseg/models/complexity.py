"""Parameter and FLOP counts read from a built model's graph, and the paper's Table 1 beside them.

Conventions, chosen to be comparable with the paper's Table 1 and the PyTorch tools (thop,
ptflops) its figures come from:

- parameters are the trainable weights; batch-norm moving statistics are left out, as
  PyTorch keeps them as buffers, not parameters;
- FLOPs are 2 x the multiply-accumulates of convolutions (regular, dilated, depthwise,
  separable, transposed) and dense layers, for one image; batch norm, activations, pooling,
  additions, concatenations, bias additions and resizing are not counted;
- a transposed convolution is counted from its output size,
  ``H_out * W_out * C_out * k_h * k_w * C_in``, as thop and ptflops count it (for a stride-2
  layer that is 4 x its true multiply-accumulates, which are counted from the input size).
"""

from __future__ import annotations

import math

import keras
from keras import layers

from napari_kdseg.models.registry import MODEL_NAMES, PAPER_TABLE1, build_model


def count_params(model: keras.Model) -> int:
    """Trainable parameters (batch-norm moving statistics excluded, as PyTorch counts)."""
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


def count_flops(model: keras.Model) -> int:
    """2 x multiply-accumulates of one image through ``model`` at its built input size."""
    return 2 * sum(_multiply_accumulates(layer) for layer in model.layers)


def _multiply_accumulates(layer: keras.Layer) -> int:
    if isinstance(layer, keras.Model):
        return sum(_multiply_accumulates(inner) for inner in layer.layers)
    counted = (
        layers.Conv2D,
        layers.Conv2DTranspose,
        layers.DepthwiseConv2D,
        layers.SeparableConv2D,
        layers.Dense,
    )
    if not isinstance(layer, counted):
        return 0
    # per output position: output pixels without the batch axis
    output_shape = layer.output.shape
    positions = math.prod(output_shape[1:-1])
    in_channels = layer.input.shape[-1]
    out_channels = output_shape[-1]
    if isinstance(layer, layers.Dense):
        return positions * in_channels * out_channels
    kernel_area = math.prod(layer.kernel_size)
    if isinstance(layer, layers.DepthwiseConv2D):
        return positions * out_channels * kernel_area
    if isinstance(layer, layers.SeparableConv2D):
        depthwise_channels = in_channels * layer.depth_multiplier
        return positions * depthwise_channels * (kernel_area + out_channels)
    if isinstance(layer, layers.Conv2DTranspose):
        return positions * out_channels * kernel_area * in_channels
    return positions * out_channels * kernel_area * in_channels // layer.groups


def model_table(size: int = 384) -> list[dict[str, str | int]]:
    """Every architecture at full width, ``size x size x 1`` input, 2 classes, with Table 1.

    Builds the models (about 100 M parameters in all, a few seconds each) without running them.
    """
    rows: list[dict[str, str | int]] = []
    for name in MODEL_NAMES:
        model = build_model(name, (size, size, 1), num_classes=2, width=1.0)
        rows.append(
            {
                "name": name,
                "params": count_params(model),
                "flops": count_flops(model),
                "paper_params": PAPER_TABLE1[name]["params"],
                "paper_flops": PAPER_TABLE1[name]["flops"],
            }
        )
    return rows
