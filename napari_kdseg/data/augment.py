"""2D augmentations of a training slice and its mask (NumPy/SciPy, seeded, backend-free).

Spatial ones (flip, rotation, scaling) are composed into one affine map and applied with a
single interpolation, so a sample is resampled once however many are on. Probabilities and
ranges follow nnU-Net's defaults for 2D data where the paper is silent.

Maps that lie on the slice's grid (a teacher's foreground probability computed ahead of
training) go through the same spatial map, from the same random draws, interpolated
linearly and 0 outside the slice as the mask is; intensity augmentation leaves them alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run, how often and how strongly."""

    flip_left_right: float = 0.5
    flip_up_down: float = 0.0
    rotation_probability: float = 0.2
    max_rotation_degrees: float = 15.0
    scale_probability: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.15)
    gamma_probability: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_probability: float = 0.15
    max_noise_std: float = 0.1
    # A smooth multiplicative intensity field (a receive coil's falloff, strongest with an
    # endorectal coil): exp of a random cubic polynomial over the slice, its coefficients
    # drawn from [-max_bias_field, max_bias_field] (TorchIO's RandomBiasField).
    bias_field_probability: float = 0.0
    max_bias_field: float = 0.5
    # In-plane Gaussian blur, sigma in pixels: a coarser acquisition than the training scans'.
    blur_probability: float = 0.0
    blur_sigma_range: tuple[float, float] = (0.5, 1.5)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def named(cls, profile: str) -> AugmentConfig:
        """A profile by name: ``standard`` (nnU-Net's 2D defaults, above) or ``scanner-shift``
        (also coil fields, blur, wider zoom and contrast: for a model meant for scanners and
        coils its training scans do not show)."""
        if profile == "standard":
            return cls()
        if profile == "scanner-shift":
            return cls(
                rotation_probability=0.3,
                scale_probability=0.5,
                scale_range=(0.7, 1.4),
                gamma_probability=0.5,
                gamma_range=(0.5, 2.0),
                noise_probability=0.2,
                bias_field_probability=0.5,
                blur_probability=0.3,
            )
        raise ValueError(f"unknown augmentation {profile!r}; choose one of {AUGMENTATIONS}")


#: The augmentation profiles :meth:`AugmentConfig.named` knows.
AUGMENTATIONS = ("standard", "scanner-shift")


def augment_slice(
    image: npt.NDArray[np.float32],
    mask: npt.NDArray[np.integer],
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """Augment ``image (rows, cols, channels)`` and ``mask (rows, cols)`` together."""
    image, mask, _ = augment_sample(image, mask, (), config, rng)
    return image, mask


def augment_sample(
    image: npt.NDArray[np.float32],
    mask: npt.NDArray[np.integer],
    maps: Sequence[npt.NDArray[np.floating]],
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], list[npt.NDArray[np.float32]]]:
    """Augment ``image (rows, cols, channels)``, ``mask (rows, cols)`` and each of ``maps``
    ``(rows, cols)`` with one draw of the spatial transform; intensity changes touch the image
    only. The random draws are those of :func:`augment_slice` whatever ``maps`` holds."""
    for number, extra in enumerate(maps):
        if extra.shape != mask.shape:
            raise ValueError(
                f"map {number} has shape {extra.shape}, the slice's mask {mask.shape}: a map "
                "to augment with the slice must lie on its grid"
            )
    image, mask, warped = _spatial(image, mask, maps, config, rng)
    image = _intensity(image, config, rng)
    return image, mask, warped


def _spatial(
    image: npt.NDArray[np.float32],
    mask: npt.NDArray[np.integer],
    maps: Sequence[npt.NDArray[np.floating]],
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], list[npt.NDArray[np.float32]]]:
    # Draw every random number every time, so one sample's choices never shift the next's.
    flip_rows = rng.random() < config.flip_up_down
    flip_cols = rng.random() < config.flip_left_right
    rotate = rng.random() < config.rotation_probability
    angle = np.deg2rad(rng.uniform(-config.max_rotation_degrees, config.max_rotation_degrees))
    rescale = rng.random() < config.scale_probability
    zoom = rng.uniform(*config.scale_range)

    maps = [np.asarray(extra, dtype=np.float32) for extra in maps]
    if not (rotate or rescale):
        # Flips alone are exact: no interpolation.
        if flip_rows:
            image, mask = image[::-1], mask[::-1]
            maps = [extra[::-1] for extra in maps]
        if flip_cols:
            image, mask = image[:, ::-1], mask[:, ::-1]
            maps = [extra[:, ::-1] for extra in maps]
        return (
            np.ascontiguousarray(image),
            np.ascontiguousarray(mask, dtype=np.uint8),
            [np.ascontiguousarray(extra) for extra in maps],
        )

    # Output pixel p samples input pixel centre + M (p - centre); M = flips . rotation / zoom.
    theta = angle if rotate else 0.0
    cos, sin = np.cos(theta), np.sin(theta)
    matrix = np.array([[cos, -sin], [sin, cos]]) / (zoom if rescale else 1.0)
    matrix = matrix @ np.diag([-1.0 if flip_rows else 1.0, -1.0 if flip_cols else 1.0])
    centre = (np.array(image.shape[:2], dtype=np.float64) - 1) / 2
    offset = centre - matrix @ centre
    channels = [
        ndimage.affine_transform(image[..., c], matrix, offset=offset, order=1, mode="nearest")
        for c in range(image.shape[-1])
    ]
    warped_mask = ndimage.affine_transform(
        mask.astype(np.uint8), matrix, offset=offset, order=0, mode="constant", cval=0
    )
    # Linear, and 0 (background) beyond the slice as for the mask: a probability map.
    warped_maps = [
        ndimage.affine_transform(extra, matrix, offset=offset, order=1, mode="constant", cval=0.0)
        for extra in maps
    ]
    return np.stack(channels, axis=-1).astype(np.float32), warped_mask, warped_maps


def _intensity(
    image: npt.NDArray[np.float32], config: AugmentConfig, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    apply_gamma = rng.random() < config.gamma_probability
    gamma = rng.uniform(*config.gamma_range)
    add_noise = rng.random() < config.noise_probability
    noise_std = rng.uniform(0.0, config.max_noise_std)
    # Drawn only when switched on, so the standard profile's draws stay what they were.
    if config.bias_field_probability > 0 and rng.random() < config.bias_field_probability:
        coefficients = rng.uniform(-config.max_bias_field, config.max_bias_field, len(_CUBIC))
        image = _bias_field(image, coefficients)
    if config.blur_probability > 0 and rng.random() < config.blur_probability:
        sigma = rng.uniform(*config.blur_sigma_range)
        image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0.0), mode="nearest")
    if apply_gamma:
        # Gamma needs [0, 1]; map there and back so the z-scored range is kept (as nnU-Net).
        low, high = float(image.min()), float(image.max())
        span = max(high - low, 1e-6)
        image = ((((image - low) / span) ** gamma) * span + low).astype(np.float32)
    if add_noise:
        image = image + noise_std * rng.standard_normal(image.shape, dtype=np.float32)
    return image


#: Exponents (i, j) of x^i y^j in the cubic polynomial of a bias field.
_CUBIC = [(i, j) for i in range(4) for j in range(4 - i)]


def _bias_field(
    image: npt.NDArray[np.float32], coefficients: npt.NDArray[np.float64]
) -> npt.NDArray[np.float32]:
    """``image`` times ``exp(sum c_ij x^i y^j)`` over ``x, y`` in [-1, 1], on intensities
    shifted to start at 0 (the field multiplies signal, not a z-score), then given back the
    image's mean and spread so the input stays standardised."""
    rows, cols = image.shape[:2]
    y, x = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    log_field = sum(c * x**i * y**j for c, (i, j) in zip(coefficients, _CUBIC, strict=True))
    field = np.exp(log_field - np.mean(log_field))[..., None]
    low = float(image.min())
    biased = (image - low) * field
    mean, std = float(image.mean()), float(image.std())
    biased = (biased - biased.mean()) / max(float(biased.std()), 1e-6) * std + mean
    return biased.astype(np.float32)
