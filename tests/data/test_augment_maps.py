"""Maps augmented with a slice (a teacher's probability) follow its spatial draws exactly."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kdseg.data.augment import AugmentConfig, augment_sample, augment_slice

EVERYTHING = AugmentConfig(
    flip_left_right=0.5,
    flip_up_down=0.5,
    rotation_probability=1,
    max_rotation_degrees=30,
    scale_probability=1,
    gamma_probability=1,
    noise_probability=1,
)
FLIPS = AugmentConfig(
    flip_left_right=1,
    flip_up_down=1,
    rotation_probability=0,
    scale_probability=0,
    gamma_probability=1,
    noise_probability=1,
)


def _slice() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:48, 0:48]
    mask = (((rows - 20) / 11) ** 2 + ((cols - 28) / 8) ** 2 < 1).astype(np.uint8)
    image = np.random.default_rng(0).normal(size=(48, 48, 3)).astype(np.float32)
    return image + 2 * mask[..., None], mask


@pytest.mark.parametrize("seed", range(6))
def test_a_map_equal_to_the_mask_stays_equal_to_it(seed: int) -> None:
    image, mask = _slice()
    warped, warped_mask, (warped_map,) = augment_sample(
        image, mask, [mask.astype(np.float32)], EVERYTHING, np.random.default_rng(seed)
    )
    # the image and mask are what augment_slice gives from the same draws
    same_image, same_mask = augment_slice(image, mask, EVERYTHING, np.random.default_rng(seed))
    np.testing.assert_array_equal(warped, same_image)
    np.testing.assert_array_equal(warped_mask, same_mask)
    # the map went through the mask's warp, linearly: it differs only along the boundary
    assert warped_map.dtype == np.float32
    assert warped_map.min() >= 0.0
    assert warped_map.max() <= 1.0
    disagree = (warped_map >= 0.5) != (warped_mask > 0)
    boundary = (warped_map > 0.02) & (warped_map < 0.98)
    assert not np.any(disagree & ~boundary)
    assert disagree.sum() <= 0.05 * max(warped_mask.sum(), 1)
    assert warped_mask.sum() > 0


def test_flips_move_the_map_exactly_and_intensity_changes_leave_it_alone() -> None:
    image, mask = _slice()
    probability = np.random.default_rng(1).random(mask.shape).astype(np.float32)
    warped, warped_mask, (warped_map,) = augment_sample(
        image, mask, [probability], FLIPS, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(warped_mask, mask[::-1, ::-1])
    np.testing.assert_array_equal(warped_map, probability[::-1, ::-1])  # no gamma, no noise
    assert not np.allclose(warped, image[::-1, ::-1])  # the image had both


def test_a_map_off_the_slice_grid_is_refused() -> None:
    image, mask = _slice()
    with pytest.raises(ValueError, match=r"map 0 has shape \(24, 24\), the slice's mask"):
        augment_sample(image, mask, [np.zeros((24, 24))], FLIPS, np.random.default_rng(0))
