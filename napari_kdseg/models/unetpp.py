"""UNet++: Zhou, Rahman Siddiquee, Tajbakhsh and Liang, "UNet++: A Nested U-Net Architecture for
Medical Image Segmentation", DLMIA 2018 (and IEEE TMI 39(6), 2020).

Faithful to the paper's Fig. 1 and to the PyTorch reference used to decode Table 1
(4uiiurz1/pytorch-nested-unet, ``NestedUNet`` with filters 64, 128, 256, 512, 1024):

- nodes X^{i,j}: i is the down-sampling level (2x2 max-pooling between levels), j the
  convolution layer along the skip pathway; every node is two 3x3 convolutions with batch
  norm and ReLU;
- dense skip pathways: X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, Up(X^{i+1,j-1})]), Up being a 2x
  bilinear up-sampling, so each node sees every earlier node of its level;
- deep supervision (optional): a 1x1 classifier on each of X^{0,1..4}; the logits are their
  average (the paper's "accurate mode"), and each head is a feature tap (``head_1`` ..
  ``head_4``) so a training loop can supervise them one by one.

Differences: Keras's bilinear up-sampling uses half-pixel centres where the reference sets
``align_corners=True``; the original Keras UNet++ up-samples with transposed convolutions and
uses dropout instead of batch norm, the configuration Table 1 was not measured on.

Feature taps: ``encoder`` = X^{4,0} (stride 16, 1024 channels at width 1), ``decoder`` =
X^{0,4} (stride 1, 64 channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from napari_kdseg.models._common import BN_MOMENTUM, check_input_shape, logits_head, scaled

FEATURE_TAPS = {
    "encoder": "x4_0_out",
    "decoder": "x0_4_out",
    **{f"head_{j}": f"head_{j}" for j in range(1, 5)},
}
TOTAL_STRIDE = 16
FILTERS = (64, 128, 256, 512, 1024)


def _node(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """H(.): two 3x3 convolutions, each with batch norm and ReLU (the reference's VGGBlock)."""
    for index in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv{index}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{index}")(x)
        x = layers.ReLU(name=f"{name}_out" if index == 2 else f"{name}_relu{index}")(x)
    return x


def build_unetpp(
    input_shape: Sequence[int],
    num_classes: int = 2,
    width: float = 1.0,
    *,
    deep_supervision: bool = False,
) -> keras.Model:
    """UNet++ (L = 4) for ``input_shape = (H, W, channels)``, H and W multiples of 16.

    ``width`` scales the filters (64, 128, 256, 512, 1024); logits ``(batch, H, W, classes)``.
    """
    check_input_shape("unetpp", input_shape, TOTAL_STRIDE)
    filters = [scaled(f, width) for f in FILTERS]
    depth = len(filters)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    nodes: dict[tuple[int, int], keras.KerasTensor] = {}
    # column by column, so every node's inputs exist when it is built
    for j in range(depth):
        for i in range(depth - j):
            if j == 0:
                x = inputs if i == 0 else layers.MaxPooling2D(2, name=f"pool{i}")(nodes[i - 1, 0])
            else:
                up = layers.UpSampling2D(2, interpolation="bilinear", name=f"x{i}_{j}_up")(
                    nodes[i + 1, j - 1]
                )
                skips = [nodes[i, k] for k in range(j)]
                x = layers.Concatenate(name=f"x{i}_{j}_concat")([*skips, up])
            nodes[i, j] = _node(x, filters[i], f"x{i}_{j}")

    if deep_supervision:
        heads = [
            layers.Conv2D(num_classes, 1, name=f"head_{j}")(nodes[0, j]) for j in range(1, depth)
        ]
        logits = layers.Average(name="heads_average")(heads)
    else:
        logits = layers.Conv2D(num_classes, 1, name="classifier")(nodes[0, depth - 1])
    return keras.Model(inputs, logits_head(logits), name="unetpp")
