"""ERFNet: Romera, Alvarez, Bergasa and Arroyo, "ERFNet: Efficient Residual Factorized ConvNet
for Real-Time Semantic Segmentation", IEEE T-ITS 19(1), 2018.

Faithful to the paper's Table I and the authors' code (Eromera/erfnet_pytorch, ``erfnet.py``),
layer numbers as in Table I:

- down-sampler block (layers 1, 2, 8): a 3x3 stride-2 convolution with ``out - in`` filters
  concatenated with a 2x2 max-pooling, batch norm, ReLU;
- non-bottleneck-1D (layers 3-7, 9-16, 18-19, 21-22): two pairs of factorised 3x1 and 1x3
  convolutions with ReLU between them and batch norm after each pair; the second pair is
  dilated (1 in stage 1 and the decoder, 2, 4, 8, 16 twice in stage 2); spatial dropout
  (0.03 in stage 1, 0.3 in stage 2, none in the decoder); identity residual, ReLU;
- decoder: 3x3 stride-2 transposed convolutions with batch norm and ReLU (layers 17, 20), and a
  2x2 stride-2 transposed convolution to the classes (layer 23); convolutions carry biases.

Differences: the reference keeps an encoder-only 1x1 classifier that the full network never
calls (258 parameters with 2 classes); it is left out. With ``k`` input channels the first
down-sampler has ``16 - k`` convolution filters so it still outputs 16 channels.

Feature taps: ``encoder`` = layer 16 (stride 8, 128 channels at width 1), ``decoder`` =
layer 22 (stride 2, 16 channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from napari_kdseg.models._common import BN_MOMENTUM, check_input_shape, logits_head, scaled

FEATURE_TAPS = {"encoder": "layer16_out", "decoder": "layer22_out"}
TOTAL_STRIDE = 8


def _downsampler(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    conv = layers.Conv2D(filters - x.shape[-1], 3, strides=2, padding="same", name=f"{name}_conv")(
        x
    )
    pool = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = layers.Concatenate(name=f"{name}_concat")([conv, pool])
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_out")(x)


def _non_bottleneck_1d(
    x: keras.KerasTensor, name: str, *, dilation: int = 1, dropout: float = 0.0
) -> keras.KerasTensor:
    channels = x.shape[-1]
    y = x
    for pair, rate in ((1, 1), (2, dilation)):
        y = layers.Conv2D(
            channels, (3, 1), padding="same", dilation_rate=(rate, 1), name=f"{name}_conv3x1_{pair}"
        )(y)
        y = layers.ReLU(name=f"{name}_relu3x1_{pair}")(y)
        y = layers.Conv2D(
            channels, (1, 3), padding="same", dilation_rate=(1, rate), name=f"{name}_conv1x3_{pair}"
        )(y)
        y = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-3, name=f"{name}_bn{pair}")(
            y
        )
        if pair == 1:
            y = layers.ReLU(name=f"{name}_relu1x3_{pair}")(y)
    if dropout:
        y = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(y)
    y = layers.Add(name=f"{name}_add")([y, x])
    return layers.ReLU(name=f"{name}_out")(y)


def _upsampler(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"{name}_deconv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_out")(x)


def build_erfnet(
    input_shape: Sequence[int], num_classes: int = 2, width: float = 1.0
) -> keras.Model:
    """ERFNet for ``input_shape = (H, W, channels)``, H and W multiples of 8.

    ``width`` scales every channel count (16, 64, 128); logits ``(batch, H, W, num_classes)``.
    """
    _, _, channels = check_input_shape("erfnet", input_shape, TOTAL_STRIDE)
    # each down-sampler's convolution needs at least one filter beside the pooled input
    stage0_filters = max(scaled(16, width), channels + 1)
    stage1_filters = max(scaled(64, width), stage0_filters + 1)
    stage2_filters = max(scaled(128, width), stage1_filters + 1)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _downsampler(inputs, stage0_filters, "layer1")
    x = _downsampler(x, stage1_filters, "layer2")
    for layer in range(3, 8):
        x = _non_bottleneck_1d(x, f"layer{layer}", dropout=0.03)
    x = _downsampler(x, stage2_filters, "layer8")
    for layer, dilation in zip(range(9, 17), (2, 4, 8, 16) * 2, strict=True):
        x = _non_bottleneck_1d(x, f"layer{layer}", dilation=dilation, dropout=0.3)

    x = _upsampler(x, scaled(64, width), "layer17")
    x = _non_bottleneck_1d(x, "layer18")
    x = _non_bottleneck_1d(x, "layer19")
    x = _upsampler(x, scaled(16, width), "layer20")
    x = _non_bottleneck_1d(x, "layer21")
    x = _non_bottleneck_1d(x, "layer22")
    x = layers.Conv2DTranspose(num_classes, 2, strides=2, name="layer23_deconv")(x)
    return keras.Model(inputs, logits_head(x), name="erfnet")
