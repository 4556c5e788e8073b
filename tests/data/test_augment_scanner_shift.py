"""The scanner-shift profile: coil intensity fields and blur on the image only, the input kept
standardised, and the standard profile's random draws unchanged by the new options."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kdseg.data.augment import AugmentConfig, augment_sample

ONLY_INTENSITY = {
    "flip_left_right": 0.0,
    "rotation_probability": 0.0,
    "scale_probability": 0.0,
    "gamma_probability": 0.0,
    "noise_probability": 0.0,
}


def _sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((48, 48, 3)).astype(np.float32)
    mask = np.zeros((48, 48), np.uint8)
    mask[16:32, 12:30] = 1
    return image, mask, mask.astype(np.float32) * 0.8


def test_a_bias_field_is_smooth_keeps_the_input_standardised_and_spares_mask_and_map() -> None:
    config = AugmentConfig(**ONLY_INTENSITY, bias_field_probability=1.0, max_bias_field=0.8)
    image = np.full((48, 48, 3), 2.0, np.float32)
    image[::2] = 1.0  # stripes: a field scales them up or down smoothly across the slice
    mask, teacher_map = _sample()[1:]
    out, out_mask, (out_map,) = augment_sample(
        image, mask, [teacher_map], config, np.random.default_rng(3)
    )
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(out_map, teacher_map)
    assert out.mean() == pytest.approx(image.mean(), abs=1e-4)
    assert out.std() == pytest.approx(image.std(), rel=1e-4)
    # the stripes' contrast (the field, up to a constant) varies across the slice, smoothly
    contrast = out[1::2, :, 0] - out[::2, :, 0]
    assert contrast.max() / contrast.min() > 1.2
    assert np.abs(np.diff(np.log(contrast), axis=1)).max() < 0.2


def test_blur_removes_fine_detail_from_the_image_only() -> None:
    config = AugmentConfig(**ONLY_INTENSITY, blur_probability=1.0, blur_sigma_range=(1.0, 1.0))
    image, mask, teacher_map = _sample()
    out, out_mask, (out_map,) = augment_sample(
        image, mask, [teacher_map], config, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(out_mask, mask)
    np.testing.assert_array_equal(out_map, teacher_map)
    # white noise blurred with sigma 1 keeps about 1 / (4 pi) of its variance
    assert out.var() < 0.15 * image.var()
    np.testing.assert_allclose(out.mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=0.05)


def test_the_standard_profile_draws_as_before() -> None:
    """The new options draw random numbers only when switched on, so seeded runs made
    before they existed augment the same way."""
    image, mask, teacher_map = _sample()
    assert AugmentConfig.named("standard") == AugmentConfig()
    rng = np.random.default_rng(7)
    # spatially a no-op and no noise, so only the ten scalar draws are made: 6 spatial
    # (2 flips, rotation and its angle, zoom and its factor), 4 intensity (gamma, noise)
    quiet = AugmentConfig(flip_left_right=0.0, rotation_probability=0.0, scale_probability=0.0)
    augment_sample(image, mask, [teacher_map], quiet, rng)
    reference = np.random.default_rng(7)
    reference.random(10)
    assert rng.random() == reference.random()
    shifted = AugmentConfig.named("scanner-shift")
    assert shifted.bias_field_probability > 0
    assert shifted.blur_probability > 0
    assert shifted.scale_range[0] < AugmentConfig().scale_range[0]
    with pytest.raises(ValueError, match=r"unknown augmentation 'heavy'; choose one of"):
        AugmentConfig.named("heavy")
