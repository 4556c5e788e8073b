"""The pieces that are ours rather than Keras's: unpooling, zero-width ESP branches, weights."""

from __future__ import annotations

import keras
import numpy as np

from napari_kdseg.models.deeplabv3plus import load_resnet_weights
from napari_kdseg.models.enet import ChannelZeroPadding, MaxUnpooling2D
from napari_kdseg.models.registry import build_model


def _torch_max_unpool(values: np.ndarray, pooled_from: np.ndarray) -> np.ndarray:
    """Torch's MaxPool2d(2, return_indices=True) + MaxUnpool2d, written out in loops."""
    out = np.zeros_like(pooled_from)
    batch, height, width, channels = pooled_from.shape
    for n, row, col, c in np.ndindex(batch, height // 2, width // 2, channels):
        window = pooled_from[n, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2, c]
        first_max = np.argmax(window)  # row-major, first of equal maxima
        out[n, 2 * row + first_max // 2, 2 * col + first_max % 2, c] = values[n, row, col, c]
    return out


def test_max_unpooling_puts_values_where_the_maxima_were():
    rng = np.random.default_rng(0)
    # small integers: many ties, which must go to the first position as in Torch
    pooled_from = rng.integers(0, 3, size=(2, 6, 8, 3)).astype(np.float32)
    values = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    unpooled = MaxUnpooling2D()([values, pooled_from])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(unpooled), _torch_max_unpool(values, pooled_from)
    )


def test_max_unpooling_inverts_max_pooling_on_the_maxima():
    images = np.random.default_rng(1).normal(size=(1, 8, 8, 2)).astype(np.float32)
    pooled = keras.layers.MaxPooling2D(2)(images)
    restored = keras.ops.convert_to_numpy(MaxUnpooling2D()([pooled, images]))
    assert np.count_nonzero(restored) == pooled.shape[1] * pooled.shape[2] * 2
    np.testing.assert_array_equal(restored[restored != 0], images[restored != 0])


def test_channel_zero_padding_appends_zero_maps():
    x = np.ones((1, 2, 2, 3), np.float32)
    padded = keras.ops.convert_to_numpy(ChannelZeroPadding(5)(x))
    assert padded.shape == (1, 2, 2, 8)
    assert (padded[..., :3] == 1).all()
    assert (padded[..., 3:] == 0).all()
    assert ChannelZeroPadding.from_config(ChannelZeroPadding(5).get_config()).channels == 5


def test_espnet_two_class_decoder_keeps_its_deep_path(tiny):
    # the reference's floor(2 / 5) = 0 wide branches would make this ESP module a constant
    model = tiny.model("espnet")
    assert model.get_layer("decoder_esp_reduce").kernel.shape == (1, 1, 4, 1)
    assert {"decoder_esp_d1", "decoder_esp_d2"} <= {layer.name for layer in model.layers}
    probe = keras.Model(model.inputs, model.get_layer("decoder_esp_act").output)
    first, second = (
        keras.ops.convert_to_numpy(probe(tiny.images(seed=seed), training=False)) for seed in (1, 2)
    )
    assert not np.allclose(first, second)


def test_imagenet_resnet_weights_transfer_exactly():
    source = keras.applications.ResNet101(include_top=False, weights=None, input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    for layer in source.layers:  # non-trivial biases and statistics, so folding is tested
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.get_weights()[0].shape
            gamma, variance = rng.uniform(0.5, 1.5, (2, *channels))
            beta, mean = rng.normal(0, 0.1, (2, *channels))
            layer.set_weights([gamma, beta, mean, variance])
    model = build_model("deeplabv3plus", (64, 64, 1))
    load_resnet_weights(model, source, input_channels=1)

    # up to stage 3 both networks are the same ResNet (ours is dilated from stage 4 on)
    tap = "conv3_block4_out"
    ours = keras.Model(model.inputs, model.get_layer(tap).output)
    theirs = keras.Model(source.inputs, source.get_layer(tap).output)
    grey = np.random.default_rng(1).normal(size=(1, 64, 64, 1)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(theirs(np.repeat(grey, 3, axis=-1), training=False))
    actual = keras.ops.convert_to_numpy(ours(grey, training=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
