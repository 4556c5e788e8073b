"""ENet: Paszke, Chaurasia, Kim and Culurciello, "ENet: A Deep Neural Network Architecture for
Real-Time Semantic Segmentation", arXiv:1606.02147 (2016).

Faithful to the paper's Table 1 and to the authors' Torch code (e-Lab/ENet-training,
``encoder.lua`` and ``decoder.lua``):

- initial block: a 3x3 stride-2 convolution with ``16 - input channels`` filters
  concatenated with a 2x2 max-pooling of the input (16 channels), batch norm, PReLU;
- bottlenecks: 1x1 projection to a quarter of the output width (2x2 stride 2 when
  down-sampling), a regular 3x3, dilated 3x3 (2, 4, 8, 16) or asymmetric 5x1 + 1x5
  convolution, 1x1 expansion, spatial dropout (0.01 in stage 1, 0.1 after), and a main branch
  that is the identity or, when down-sampling, a 2x2 max-pooling zero-padded to the new width;
  projections carry no bias (section 4: fewer kernel calls, no loss of accuracy), the middle
  convolution does;
- stages 1-3 (encoder) use per-channel PReLU initialised at 0.25; stages 4-5 (decoder) ReLU;
- up-sampling bottlenecks: a 3x3 transposed convolution in the extension branch and, in the
  main branch, a 1x1 convolution followed by max-unpooling with the switches of the matching
  down-sampling bottleneck; the last layer is a 2x2 stride-2 transposed convolution.

Differences: max-unpooling recomputes the argmax switches from the tensor that was pooled
(:class:`MaxUnpooling2D`) instead of carrying indices, which gives the same result (ties go to
the first position of the window in row-major order, as in Torch); with ``k`` input channels
the initial convolution has ``16 - k`` filters so the block still outputs 16 (15 for one MRI
slice, 13 for RGB as in the paper). The PyTorch port used to decode the paper's Table 1
(davidtvs/PyTorch-ENet) differs in small ways we do not copy: one PReLU slope per layer,
projections a quarter of the *input* width, no biases at all, a 3x3 overlapping max-pooling in
the initial block, 2x2 deconvolutions in the up-sampling bottlenecks, a 3x3 final one and
dropout in the decoder.

Feature taps: ``encoder`` = output of bottleneck 3.8 (stride 8, 128 channels at width 1),
``decoder`` = output of bottleneck 5.1 (stride 2, 16 channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from napari_kdseg.models._common import BN_MOMENTUM, check_input_shape, logits_head, scaled

FEATURE_TAPS = {"encoder": "bottleneck3_8_out", "decoder": "bottleneck5_1_out"}
TOTAL_STRIDE = 8


@keras.saving.register_keras_serializable(package="napari_kdseg")
class MaxUnpooling2D(layers.Layer):
    """Inverse of a 2x2 stride-2 max-pooling, called on ``[values, pooled_from]``.

    Each value goes back to where the maximum of its 2x2 window was in ``pooled_from`` (the
    tensor the encoder max-pooled) and the other three positions get zeros: Torch's
    ``SpatialMaxUnpooling`` with the switches recomputed rather than stored. The switches are
    constants for back-propagation, as Torch's indices are.
    """

    def call(self, inputs: Sequence[Any]) -> Any:
        values, pooled_from = inputs
        _, height, width, channels = ops.shape(pooled_from)
        rows, cols = height // 2, width // 2
        switches = ops.cast(self.switches(ops.stop_gradient(pooled_from)), values.dtype)
        unpooled = ops.reshape(
            switches * ops.expand_dims(values, -1), (-1, rows, cols, channels, 2, 2)
        )
        unpooled = ops.transpose(unpooled, (0, 1, 4, 2, 5, 3))
        return ops.reshape(unpooled, (-1, height, width, channels))

    @staticmethod
    def switches(pooled_from: Any) -> Any:
        """``(batch, rows, cols, channels, 4)``: one-hot of where each 2x2 window of
        ``pooled_from`` has its maximum, the window's pixels in row-major order."""
        _, height, width, channels = ops.shape(pooled_from)
        rows, cols = height // 2, width // 2
        windows = ops.reshape(pooled_from, (-1, rows, 2, cols, 2, channels))
        windows = ops.reshape(
            ops.transpose(windows, (0, 1, 3, 5, 2, 4)), (-1, rows, cols, channels, 4)
        )
        return _first_maximum(windows)

    def compute_output_shape(self, input_shapes: Sequence[tuple]) -> tuple:
        values_shape, pooled_from_shape = input_shapes
        return (values_shape[0], *pooled_from_shape[1:3], values_shape[3])


def _first_maximum(windows: Any) -> Any:
    """``ops.one_hot(ops.argmax(windows, axis=-1), n)``, written with comparisons only.

    Same result, including ``keras.ops.argmax``'s ranking of -0.0 below +0.0 and ties going
    to the first position; but the argmax of floats lowers to a ``Bitcast`` that ONNX cannot
    express, and this exports (``-0.0`` is found as the zero whose reciprocal is negative).
    """
    windows = ops.cast(windows, "float32")
    negative_zero = ops.logical_and(
        ops.equal(windows, 0.0), ops.less(ops.divide(1.0, windows), 0.0)
    )
    windows = ops.where(negative_zero, -np.finfo(np.float32).tiny, windows)
    is_maximum = ops.cast(ops.equal(windows, ops.max(windows, axis=-1, keepdims=True)), "float32")
    return is_maximum * ops.cast(ops.equal(ops.cumsum(is_maximum, axis=-1), 1.0), "float32")


@keras.saving.register_keras_serializable(package="napari_kdseg")
class ChannelZeroPadding(layers.Layer):
    """Appends ``channels`` zero feature maps: the widening main branch of a down-sampling
    bottleneck, which adds no parameters (ENet section 3)."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, inputs: Any) -> Any:
        return ops.pad(inputs, ((0, 0), (0, 0), (0, 0), (0, self.channels)))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:3], input_shape[3] + self.channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels}


def _activation(name: str, *, relu: bool) -> layers.Layer:
    if relu:
        return layers.ReLU(name=name)
    # one slope per channel, 0.25 at start, as Torch's nn.PReLU(n)
    return layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name
    )


def _batch_norm(name: str) -> layers.Layer:
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-3, name=name)


def _initial_block(inputs: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    conv = layers.Conv2D(
        filters - inputs.shape[-1], 3, strides=2, padding="same", name="initial_conv"
    )(inputs)
    pool = layers.MaxPooling2D(2, name="initial_pool")(inputs)
    x = layers.Concatenate(name="initial_concat")([conv, pool])
    x = _batch_norm("initial_bn")(x)
    return _activation("initial_out", relu=False)(x)


def _bottleneck(
    x: keras.KerasTensor,
    filters: int,
    name: str,
    *,
    dropout: float,
    relu: bool = False,
    downsample: bool = False,
    dilation: int = 1,
    asymmetric: int = 0,
) -> keras.KerasTensor:
    """Regular, dilated, asymmetric or down-sampling bottleneck (ENet Fig. 2b)."""
    internal = max(1, filters // 4)
    stride = 2 if downsample else 1
    y = layers.Conv2D(internal, stride, strides=stride, use_bias=False, name=f"{name}_project")(x)
    y = _batch_norm(f"{name}_project_bn")(y)
    y = _activation(f"{name}_project_act", relu=relu)(y)
    if asymmetric:
        y = layers.Conv2D(
            internal, (asymmetric, 1), padding="same", use_bias=False, name=f"{name}_conv_a"
        )(y)
        y = layers.Conv2D(internal, (1, asymmetric), padding="same", name=f"{name}_conv_b")(y)
    else:
        y = layers.Conv2D(internal, 3, padding="same", dilation_rate=dilation, name=f"{name}_conv")(
            y
        )
    y = _batch_norm(f"{name}_conv_bn")(y)
    y = _activation(f"{name}_conv_act", relu=relu)(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_expand")(y)
    y = _batch_norm(f"{name}_expand_bn")(y)
    if dropout:
        y = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(y)

    main = x
    if downsample:
        main = layers.MaxPooling2D(2, name=f"{name}_pool")(main)
    if filters > main.shape[-1]:
        main = ChannelZeroPadding(filters - main.shape[-1], name=f"{name}_pad")(main)
    out = layers.Add(name=f"{name}_add")([main, y])
    return _activation(f"{name}_out", relu=relu)(out)


def _upsampling_bottleneck(
    x: keras.KerasTensor, pooled_from: keras.KerasTensor, name: str
) -> keras.KerasTensor:
    """Decoder bottleneck: unpools back to the grid and width of ``pooled_from``."""
    filters = pooled_from.shape[-1]
    internal = max(1, filters // 4)
    y = layers.Conv2D(internal, 1, use_bias=False, name=f"{name}_project")(x)
    y = _batch_norm(f"{name}_project_bn")(y)
    y = layers.ReLU(name=f"{name}_project_act")(y)
    y = layers.Conv2DTranspose(internal, 3, strides=2, padding="same", name=f"{name}_deconv")(y)
    y = _batch_norm(f"{name}_deconv_bn")(y)
    y = layers.ReLU(name=f"{name}_deconv_act")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_expand")(y)
    y = _batch_norm(f"{name}_expand_bn")(y)

    main = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_main_conv")(x)
    main = _batch_norm(f"{name}_main_bn")(main)
    main = MaxUnpooling2D(name=f"{name}_unpool")([main, pooled_from])
    out = layers.Add(name=f"{name}_add")([main, y])
    return layers.ReLU(name=f"{name}_out")(out)


def build_enet(input_shape: Sequence[int], num_classes: int = 2, width: float = 1.0) -> keras.Model:
    """ENet for ``input_shape = (H, W, channels)``, H and W multiples of 8.

    ``width`` scales every channel count (16, 64, 128); logits ``(batch, H, W, num_classes)``.
    """
    _, _, channels = check_input_shape("enet", input_shape, TOTAL_STRIDE)
    initial_filters = max(scaled(16, width), channels + 1)
    stage1_filters = max(scaled(64, width), initial_filters)
    stage2_filters = max(scaled(128, width), stage1_filters)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    stage1_input = _initial_block(inputs, initial_filters)
    x = _bottleneck(stage1_input, stage1_filters, "bottleneck1_0", dropout=0.01, downsample=True)
    for index in range(1, 5):
        x = _bottleneck(x, stage1_filters, f"bottleneck1_{index}", dropout=0.01)

    stage2_input = x
    x = _bottleneck(x, stage2_filters, "bottleneck2_0", dropout=0.1, downsample=True)
    # stages 2 and 3 repeat: regular, dilated 2, asymmetric 5, dilated 4, regular, dilated 8,
    # asymmetric 5, dilated 16 (stage 2 adds the down-sampling bottleneck 2.0 in front)
    pattern = ({}, {"dilation": 2}, {"asymmetric": 5}, {"dilation": 4})
    pattern += ({}, {"dilation": 8}, {"asymmetric": 5}, {"dilation": 16})
    for stage in (2, 3):
        for index, kind in enumerate(pattern, start=1):
            x = _bottleneck(x, stage2_filters, f"bottleneck{stage}_{index}", dropout=0.1, **kind)

    x = _upsampling_bottleneck(x, stage2_input, "bottleneck4_0")
    for index in (1, 2):
        x = _bottleneck(x, stage1_filters, f"bottleneck4_{index}", dropout=0.0, relu=True)
    x = _upsampling_bottleneck(x, stage1_input, "bottleneck5_0")
    x = _bottleneck(x, initial_filters, "bottleneck5_1", dropout=0.0, relu=True)
    x = layers.Conv2DTranspose(num_classes, 2, strides=2, name="fullconv")(x)
    return keras.Model(inputs, logits_head(x), name="enet")
