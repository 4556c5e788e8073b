"""Input/output contracts of the five architectures and their feature taps."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from napari_kdseg.models import (
    MODEL_NAMES,
    STUDENTS,
    TEACHERS,
    build_model,
    feature_taps,
    with_features,
)
from napari_kdseg.models._common import scaled

# documented taps: (stride, channels at width 1; None = num_classes)
DOCUMENTED_TAPS = {
    "enet": {"encoder": (8, 128), "decoder": (2, 16)},
    "espnet": {"encoder": (8, 256), "decoder": (2, None)},
    "erfnet": {"encoder": (8, 128), "decoder": (2, 16)},
    "unetpp": {"encoder": (16, 1024), "decoder": (1, 64)},
    "deeplabv3plus": {
        "low_level": (4, 256),
        "backbone": (8, 2048),
        "encoder": (8, 256),
        "decoder": (4, 256),
    },
}


def test_names_partition_into_students_and_teachers():
    assert set(MODEL_NAMES) == set(STUDENTS) | set(TEACHERS)
    assert not set(STUDENTS) & set(TEACHERS)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_cover_the_input_at_full_resolution(tiny, name, channels):
    logits = tiny.model(name, channels)(tiny.images(channels=channels), training=False)
    assert tuple(logits.shape) == (2, tiny.size, tiny.size, 2)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(keras.ops.convert_to_numpy(logits)).all()


@pytest.mark.parametrize(
    ("name", "shape", "multiple"),
    [("enet", (60, 64, 1), 8), ("unetpp", (72, 72, 1), 16), ("deeplabv3plus", (64, 36, 3), 8)],
)
def test_sizes_the_strides_do_not_allow_are_refused(name, shape, multiple):
    message = f"{name} needs height and width that are multiples of {multiple}"
    with pytest.raises(ValueError, match=message):
        build_model(name, shape)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown model 'unet'"):
        build_model("unet", (64, 64, 1))
    with pytest.raises(ValueError, match="width must be positive"):
        build_model("enet", (64, 64, 1), width=0)
    with pytest.raises(ValueError, match="static sizes"):
        build_model("erfnet", (None, None, 1))
    with pytest.raises(ValueError, match=r"width 1\.0 only"):
        build_model("deeplabv3plus", (64, 64, 1), width=0.5, pretrained=True)


def test_width_scales_the_parameter_count():
    narrow = build_model("erfnet", (64, 64, 1), width=0.25).count_params()
    wide = build_model("erfnet", (64, 64, 1), width=0.5).count_params()
    # convolutions between scaled layers grow with width squared
    assert 3.5 < wide / narrow < 4.1


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_feature_taps_have_the_documented_strides_and_widths(tiny, name):
    model = tiny.model(name)
    documented = DOCUMENTED_TAPS[name]
    assert set(documented) <= set(feature_taps(model))
    features = with_features(model, taps=tuple(documented))(tiny.images(), training=False)
    for tap, (stride, channels) in documented.items():
        expected_channels = 2 if channels is None else scaled(channels, tiny.width)
        expected = (2, tiny.size // stride, tiny.size // stride, expected_channels)
        assert tuple(features[tap].shape) == expected, tap


@pytest.mark.parametrize("name", ["enet", "unetpp"])
def test_feature_model_shares_the_weights(tiny, name):
    model = tiny.model(name)
    features = with_features(model)
    assert {id(w) for w in features.weights} == {id(w) for w in model.weights}
    images = tiny.images()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(features(images, training=False)["logits"]),
        keras.ops.convert_to_numpy(model(images, training=False)),
    )


def test_unknown_taps_and_foreign_models_are_refused(tiny):
    with pytest.raises(ValueError, match=r"has no feature tap \['bottleneck'\]"):
        with_features(tiny.model("enet"), taps=("bottleneck",))
    inputs = keras.Input((8, 8, 1))
    foreign = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs), name="mine")
    with pytest.raises(ValueError, match="'mine' is not one of the architectures"):
        feature_taps(foreign)


def test_unetpp_deep_supervision_averages_four_heads(tiny):
    model = tiny.build("unetpp", deep_supervision=True)
    heads = [f"head_{j}" for j in range(1, 5)]
    outputs = with_features(model, taps=heads)(tiny.images(), training=False)
    stacked = np.stack([keras.ops.convert_to_numpy(outputs[head]) for head in heads])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(outputs["logits"]), stacked.mean(axis=0), rtol=1e-5, atol=1e-6
    )


def test_deeplab_second_refinement_conv_is_optional(tiny):
    one = tiny.model("deeplabv3plus")
    two = tiny.build("deeplabv3plus", refine_convs=2)
    assert "decoder_refine2_conv" in {layer.name for layer in two.layers}
    assert feature_taps(two)["decoder"] == feature_taps(one)["decoder"] == "decoder_out"
