"""ESPNet: Mehta, Rastegari, Caspi, Shapiro and Hajishirzi, "ESPNet: Efficient Spatial Pyramid
of Dilated Convolutions for Semantic Segmentation", ECCV 2018.

The full ESPNet (not ESPNet-C, not ESPNetv2) with depth multipliers ``p`` = alpha_2 = 2 and
``q`` = alpha_3 = 3, faithful to the paper's Fig. 4(d) and the authors' code
(sacmehta/ESPNet, ``Model.py``, class ``ESPNet``):

- ESP module: reduce (1x1 convolution to N/K channels; a 3x3 stride-2 convolution in the
  strided module), split into K = 5 parallel 3x3 convolutions with dilations 1, 2, 4, 8, 16,
  hierarchical feature fusion (each branch is added to the sum of the ones with smaller
  dilation before concatenation, to remove gridding artefacts), merge, then batch norm and
  per-channel PReLU; an identity residual in the encoder's non-strided modules;
- encoder: a 3x3 stride-2 CBR with 16 filters, ESP stages of 64 and 128 channels, and input
  reinforcement: the image, average-pooled once and twice, concatenated at strides 2 and 4;
- decoder: the encoder's 1x1 classifier on the stride-8 features and a 1x1 projection of the
  stride-4 features, merged by an ESP module, with 2x2 transposed convolutions and a 3x3 CBR
  on the concatenation with the stride-2 features; all convolutions without bias.

Deliberate difference: the decoder's ESP module has ``num_classes`` output channels and the
reference splits them as ``floor(N / 5)`` per branch, so with 2 classes four of its five
branches and its reduction have zero width (the reference then outputs a constant, cutting
the stride-4 and stride-8 paths off the prediction). Here an ESP module narrower than five
channels uses ``K = N`` branches of one channel each (dilations 1, 2, ... 2^(N-1)); K is a
free hyper-parameter of the ESP module in the paper. For N >= 5 it is the reference module.
Minor: the image pyramid's average pooling pads below and right (on the grid of Keras's
stride-2 convolutions) where the reference pads one pixel all round; zeros count in the
average in both.

Feature taps: ``encoder`` = the concatenation of the strided and the last stride-8 ESP
modules after BN and PReLU (stride 8, 256 channels at width 1); ``decoder`` = the 3x3 CBR
before the classifier (stride 2, ``num_classes`` channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from napari_kdseg.models._common import BN_MOMENTUM, check_input_shape, logits_head, scaled

FEATURE_TAPS = {"encoder": "level3_merge_act", "decoder": "decoder_cbr_act"}
TOTAL_STRIDE = 8
DILATIONS = (1, 2, 4, 8, 16)


def _bn_prelu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=f"{name}_act"
    )(x)


def _conv(filters: int, kernel_size: int, name: str, **kwargs: object) -> layers.Layer:
    return layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=name, **kwargs)


def _average_pool(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """3x3 stride-2 average with zeros counted at the border, as the reference's AvgPool2d.

    Padded below and right, as Keras pads a stride-2 "same" convolution, so the pooled image
    lies on the grid of the convolutions it is concatenated with; explicit, because
    ``padding="same"`` pooling treats the border differently on each Keras backend.
    """
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    return layers.AveragePooling2D(3, strides=2, name=name)(x)


def _esp_module(
    x: keras.KerasTensor,
    filters: int,
    name: str,
    *,
    downsample: bool = False,
    residual: bool = False,
) -> keras.KerasTensor:
    """Reduce, split, transform (dilated 3x3), hierarchical fusion, merge (Fig. 4 c-d)."""
    branches = min(len(DILATIONS), filters)
    branch_width = filters // branches
    first_width = filters - (branches - 1) * branch_width  # the remainder goes to dilation 1
    if downsample:
        reduced = _conv(branch_width, 3, f"{name}_reduce", strides=2)(x)
    else:
        reduced = _conv(branch_width, 1, f"{name}_reduce")(x)
    transformed = [
        _conv(
            first_width if index == 0 else branch_width,
            3,
            f"{name}_d{dilation}",
            dilation_rate=dilation,
        )(reduced)
        for index, dilation in enumerate(DILATIONS[:branches])
    ]
    fused = transformed[:2]
    for index in range(2, branches):
        fused.append(layers.Add(name=f"{name}_fuse{index}")([fused[-1], transformed[index]]))
    merged = layers.Concatenate(name=f"{name}_merge")(fused) if branches > 1 else fused[0]
    if residual:
        merged = layers.Add(name=f"{name}_residual")([x, merged])
    return _bn_prelu(merged, name)


def build_espnet(
    input_shape: Sequence[int],
    num_classes: int = 2,
    width: float = 1.0,
    *,
    p: int = 2,
    q: int = 3,
) -> keras.Model:
    """ESPNet for ``input_shape = (H, W, channels)``, H and W multiples of 8.

    ``p`` and ``q`` are the ESP modules at strides 4 and 8 (the paper's alpha_2, alpha_3);
    ``width`` scales the encoder's channel counts (16, 64, 128); the decoder is
    ``num_classes`` wide as in the paper.
    """
    check_input_shape("espnet", input_shape, TOTAL_STRIDE)
    level1_filters, level2_filters, level3_filters = (scaled(c, width) for c in (16, 64, 128))

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    # input reinforcement: the image at strides 2 and 4, pooled in a pyramid
    image_2 = _average_pool(inputs, "image_pool2")
    image_4 = _average_pool(image_2, "image_pool4")

    level1 = _conv(level1_filters, 3, "level1_conv", strides=2)(inputs)
    level1 = _bn_prelu(level1, "level1")
    level1 = layers.Concatenate(name="level1_concat")([level1, image_2])
    level1 = _bn_prelu(level1, "level1_merge")

    level2_down = _esp_module(level1, level2_filters, "level2_0", downsample=True)
    x = level2_down
    for index in range(1, p + 1):
        x = _esp_module(x, level2_filters, f"level2_{index}", residual=True)
    level2 = layers.Concatenate(name="level2_concat")([x, level2_down, image_4])
    level2 = _bn_prelu(level2, "level2_merge")

    level3_down = _esp_module(level2, level3_filters, "level3_0", downsample=True)
    x = level3_down
    for index in range(1, q + 1):
        x = _esp_module(x, level3_filters, f"level3_{index}", residual=True)
    level3 = layers.Concatenate(name="level3_concat")([level3_down, x])
    level3 = _bn_prelu(level3, "level3_merge")

    # decoder: class maps at stride 8, merged with the stride-4 features, refined at stride 2
    level3_classes = _conv(num_classes, 1, "level3_classifier")(level3)
    level3_classes = layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=1e-3, name="level3_classifier_bn"
    )(level3_classes)
    level3_up = layers.Conv2DTranspose(num_classes, 2, strides=2, use_bias=False, name="level3_up")(
        level3_classes
    )
    level2_classes = _conv(num_classes, 1, "level2_classifier")(level2)
    x = layers.Concatenate(name="decoder_level2_concat")([level2_classes, level3_up])
    x = _bn_prelu(x, "decoder_level2_merge")
    x = _esp_module(x, num_classes, "decoder_esp")
    x = layers.Conv2DTranspose(num_classes, 2, strides=2, use_bias=False, name="level2_up")(x)
    x = _bn_prelu(x, "level2_up")
    x = layers.Concatenate(name="decoder_level1_concat")([x, level1])
    x = _conv(num_classes, 3, "decoder_cbr_conv")(x)
    x = _bn_prelu(x, "decoder_cbr")
    x = layers.Conv2DTranspose(num_classes, 2, strides=2, use_bias=False, name="classifier")(x)
    return keras.Model(inputs, logits_head(x), name="espnet")
