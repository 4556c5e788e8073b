"""DeepLabV3+: Chen, Zhu, Papandreou, Schroff and Adam, "Encoder-Decoder with Atrous Separable
Convolution for Semantic Image Segmentation", ECCV 2018, on a ResNet-101 encoder (He, Zhang,
Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016).

Faithful to the papers and to the PyTorch reference used to decode Table 1
(VainF/DeepLabV3Plus-Pytorch, ``deeplabv3plus_resnet101``, output stride 8):

- encoder: ResNet-101 (7x7 stem, max-pooling, 3 + 4 + 23 + 3 bottleneck blocks of widths 64,
  128, 256, 512 expanded 4x), built from ``keras.layers`` with random initialisation; output
  stride 8 by replacing the strides of its last two stages with dilation (stage 4: 1 then 2,
  stage 5: 2 then 4, as torchvision's ``replace_stride_with_dilation``);
- ASPP: a 1x1 convolution, three 3x3 atrous convolutions with rates 12, 24, 36 (the paper's
  6, 12, 18 doubled for output stride 8) and image pooling, 256 channels each with batch norm
  and ReLU, concatenated and projected by a 1x1 convolution to 256 (dropout 0.1);
- decoder: the stride-4 low-level features projected to 48 channels by a 1x1 convolution,
  concatenated with the ASPP output up-sampled 2x (bilinear), ``refine_convs`` 3x3
  convolutions of 256 channels, a 1x1 classifier and a 4x bilinear up-sampling.

Choices: ``refine_convs=1`` is the reference Table 1 was measured on; the DeepLabV3+ paper's
best decoder (its Table 2) has two, ``refine_convs=2``. The stride of a stage's first block
sits on its first 1x1 convolution, as in the ResNet paper and ``keras.applications.ResNet101``
(torchvision moves it to the 3x3 convolution; at output stride 8 that changes only stage 3's
first block, 0.45 GFLOPs at 384 x 384). Layer names follow ``keras.applications`` so that
``pretrained=True`` can load its ImageNet weights (downloaded then, never by default): their
convolution biases are folded into the following batch norm, which is exact, and the RGB
stem kernel is summed over colours and split evenly across the input channels.

Feature taps: ``low_level`` = stage 2 output (stride 4, 256 channels at width 1),
``backbone`` = stage 5 output (stride 8, 2048), ``encoder`` = ASPP output (stride 8, 256),
``decoder`` = last 3x3 refinement (stride 4, 256).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from napari_kdseg.models._common import BN_MOMENTUM, check_input_shape, logits_head, scaled

FEATURE_TAPS = {
    "low_level": "conv2_block3_out",
    "backbone": "conv5_block3_out",
    "encoder": "aspp_out",
    "decoder": "decoder_out",
}
TOTAL_STRIDE = 8
ATROUS_RATES = (12, 24, 36)
# ResNet-101 stages conv2..conv5: (bottleneck width, blocks, stride, dilation of the first
# block, dilation of the others) at output stride 8
RESNET101_STAGES = (
    (64, 3, 1, 1, 1),
    (128, 4, 2, 1, 1),
    (256, 23, 1, 1, 2),
    (512, 3, 1, 2, 4),
)
_RESNET_BN_EPSILON = 1.001e-5  # keras.applications' value, so ImageNet statistics transfer


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel_size: int, name: str, **kwargs: object
) -> keras.KerasTensor:
    x = layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv", **kwargs
    )(x)
    return layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=_RESNET_BN_EPSILON, name=f"{name}_bn"
    )(x)


def _bottleneck(
    x: keras.KerasTensor, filters: int, stride: int, dilation: int, name: str
) -> keras.KerasTensor:
    """ResNet bottleneck: 1x1 (strided), 3x3 (dilated), 1x1 to 4x the width, residual."""
    if stride > 1 or x.shape[-1] != 4 * filters:
        shortcut = _conv_bn(x, 4 * filters, 1, f"{name}_0", strides=stride)
    else:
        shortcut = x
    y = _conv_bn(x, filters, 1, f"{name}_1", strides=stride)
    y = layers.ReLU(name=f"{name}_1_relu")(y)
    y = _conv_bn(y, filters, 3, f"{name}_2", dilation_rate=dilation)
    y = layers.ReLU(name=f"{name}_2_relu")(y)
    y = _conv_bn(y, 4 * filters, 1, f"{name}_3")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _resnet101(
    inputs: keras.KerasTensor, width: float
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Stride-4 low-level features and stride-8 deep features of a dilated ResNet-101."""
    # explicit symmetric padding as Torch and keras.applications, not Keras's "same"
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(scaled(64, width), 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=_RESNET_BN_EPSILON, name="conv1_bn"
    )(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    low_level = x
    for stage, (filters, blocks, stride, first_dilation, dilation) in enumerate(
        RESNET101_STAGES, start=2
    ):
        for block in range(1, blocks + 1):
            x = _bottleneck(
                x,
                scaled(filters, width),
                stride if block == 1 else 1,
                first_dilation if block == 1 else dilation,
                f"conv{stage}_block{block}",
            )
        if stage == 2:
            low_level = x
    return low_level, x


def _conv_bn_relu(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    name: str,
    output_name: str | None = None,
    **kwargs: object,
) -> keras.KerasTensor:
    x = layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv", **kwargs
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=output_name or f"{name}_relu")(x)


def _aspp(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    """Atrous spatial pyramid pooling with image-level features (DeepLabv3, section 3.3)."""
    height, width = x.shape[1:3]
    branches = [_conv_bn_relu(x, filters, 1, "aspp_1x1")]
    branches += [
        _conv_bn_relu(x, filters, 3, f"aspp_rate{rate}", dilation_rate=rate)
        for rate in ATROUS_RATES
    ]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = _conv_bn_relu(pooled, filters, 1, "aspp_image")
    # bilinear up-sampling of a 1x1 map is a broadcast: nearest computes the same, cheaper
    branches.append(layers.UpSampling2D((height, width), name="aspp_image_up")(pooled))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = _conv_bn_relu(x, filters, 1, "aspp_project", output_name="aspp_out")
    return layers.Dropout(0.1, name="aspp_dropout")(x)


def build_deeplabv3plus(
    input_shape: Sequence[int],
    num_classes: int = 2,
    width: float = 1.0,
    *,
    refine_convs: int = 1,
    pretrained: bool = False,
) -> keras.Model:
    """DeepLabV3+ with a ResNet-101 encoder at output stride 8, H and W multiples of 8.

    ``width`` scales every channel count (ResNet, ASPP 256, decoder 48 and 256);
    ``pretrained=True`` (width 1 only) downloads and loads Keras's ImageNet ResNet-101.
    """
    _, _, channels = check_input_shape("deeplabv3plus", input_shape, TOTAL_STRIDE)
    if pretrained and width != 1.0:
        raise ValueError("deeplabv3plus: ImageNet weights exist for width 1.0 only")
    if refine_convs < 1:
        raise ValueError(f"deeplabv3plus: refine_convs must be >= 1, got {refine_convs}")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    low_level, deep = _resnet101(inputs, width)
    x = _aspp(deep, scaled(256, width))
    x = layers.UpSampling2D(2, interpolation="bilinear", name="aspp_up")(x)
    low_level = _conv_bn_relu(low_level, scaled(48, width), 1, "decoder_low_level")
    x = layers.Concatenate(name="decoder_concat")([low_level, x])
    for index in range(1, refine_convs + 1):
        last = index == refine_convs
        x = _conv_bn_relu(
            x, scaled(256, width), 3, f"decoder_refine{index}", "decoder_out" if last else None
        )
    x = layers.Conv2D(num_classes, 1, name="classifier")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="classifier_up")(x)
    model = keras.Model(inputs, logits_head(x), name="deeplabv3plus")
    if pretrained:
        source = keras.applications.ResNet101(
            include_top=False, weights="imagenet", input_shape=(None, None, 3)
        )
        load_resnet_weights(model, source, channels)
    return model


def load_resnet_weights(model: keras.Model, source: keras.Model, input_channels: int) -> None:
    """Copies a ``keras.applications`` ResNet-101's weights into ``model``'s encoder.

    Its convolutions have biases where ours do not: each is folded into the batch norm that
    follows (``BN(conv(x) + b)`` equals ``BN'(conv(x))`` with moving mean ``mean - b``).
    """
    biases: dict[str, np.ndarray] = {}
    for layer in source.layers:
        if isinstance(layer, layers.Conv2D):
            kernel, bias = layer.get_weights()
            if layer.name == "conv1_conv":
                # one kernel per colour summed, shared by the channels: a grey image repeated
                # in every channel gives the response the RGB stem gives to grey
                kernel = np.repeat(kernel.sum(axis=2, keepdims=True), input_channels, axis=2)
                kernel /= input_channels
            model.get_layer(layer.name).set_weights([kernel])
            biases[layer.name.removesuffix("_conv")] = bias
        elif isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            bias = biases[layer.name.removesuffix("_bn")]
            model.get_layer(layer.name).set_weights([gamma, beta, mean - bias, variance])
