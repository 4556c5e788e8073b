"""SAML's preprocessing protocol, configurable, with an exact way back to the source grid.

Forward (training and inference alike):

1. reorient the voxel axes to a canonical order (default LPS: axial slices, patient left to
   the right of the image, anterior at the top) by flips and axis swaps only, which is exact;
2. labels > 0 become prostate;
3. z-score the scan over the whole volume (SAML normalises per volume); with
   ``intensity="local"``, first divide each slice by its local mean (a Gaussian of
   :data:`LOCAL_MEAN_SIGMA_MM`), which flattens a receive coil's sensitivity falloff (an
   endorectal coil's above all) the way homomorphic filtering does;
4. resample every slice in plane to the model grid (default 384 x 384), linear for scans and
   for masks (thresholded at 0.5), anti-aliased when shrinking: the whole slice (SAML), or,
   with ``pixel_mm``, a square of ``size x pixel_mm`` millimetres centred on the slice, so a
   pixel is the same size whatever the scanner's field of view (nnU-Net resamples to one
   spacing for the same reason); the scan is cropped, or padded with its darkest value;
5. feed the network ``context`` neighbouring slices as channels (2.5D; SAML uses 3) to predict
   the centre slice.

:class:`Geometry` remembers what 1 and 4 did so network outputs go back to the source grid:
the inverse in-plane map uses the same pixel-centre convention, so composing the two maps is
the identity on coordinates, and the inverse reorientation is exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from scipy import ndimage

from napari_kdseg.core.errors import VolumeError
from napari_kdseg.data.volume import Volume

# Bump when the stored result of prepare_case changes, so caches made by older code are unused.
# 2: a mask is checked against its scan's grid (by affine) before it is cached; entries made
# by version 1 may hold a mask from another grid, and must be rebuilt to be checked.
PREPROCESS_VERSION = 2


#: How intensities are normalised (see :class:`PreprocessConfig`).
INTENSITY_NORMALISATIONS = ("volume", "local")
#: The in-plane Gaussian (mm) whose local mean ``intensity="local"`` divides by: wide enough
#: to keep the contrast between the gland and its neighbours, narrow enough to follow an
#: endorectal coil's falloff (on the real Case00 it brings the gland's mean z-score from
#: 0.88 to 0.27, that of surface-coil 3 T scans being 0.12-0.20).
LOCAL_MEAN_SIGMA_MM = 10.0


@dataclass(frozen=True)
class PreprocessConfig:
    """How scans become network inputs. Defaults follow SAML (Liu et al., MICCAI 2020)."""

    size: int = 384
    context: int = 3
    orientation: str = "LPS"
    # In-plane pixel size (mm) of the model grid; None resizes the whole slice to it.
    pixel_mm: float | None = None
    # "volume": z-score over the whole volume (SAML); "local": each slice divided by its
    # local mean first (coil falloff flattened), then the same z-score.
    intensity: str = "volume"

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"model grid size must be at least 8 pixels, got {self.size}")
        if self.pixel_mm is not None and not self.pixel_mm > 0:
            raise ValueError(f"pixel_mm must be a positive size in mm, got {self.pixel_mm}")
        if self.intensity not in INTENSITY_NORMALISATIONS:
            raise ValueError(
                f"intensity must be one of {INTENSITY_NORMALISATIONS}, got {self.intensity!r}"
            )
        if self.context < 1 or self.context % 2 == 0:
            raise ValueError(f"context must be an odd number of slices >= 1, got {self.context}")
        axes = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}
        if len(self.orientation) != 3 or {axes.get(c, -1) for c in self.orientation} != {0, 1, 2}:
            raise ValueError(
                f"orientation must name each axis once, like 'LPS', got {self.orientation!r}"
            )

    def to_json(self) -> dict[str, Any]:
        """The settings; ``pixel_mm`` and ``intensity`` only when not their defaults, so that
        the keys of caches made before they existed stay valid."""
        data = asdict(self)
        if self.pixel_mm is None:
            del data["pixel_mm"]
        if self.intensity == "volume":
            del data["intensity"]
        return data


@dataclass(frozen=True)
class Geometry:
    """Where the model grid sits in the source volume; enough to map predictions back."""

    source_shape: tuple[int, int, int]
    source_affine: npt.NDArray[np.float64]
    orientation: str
    size: int
    pixel_mm: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = {
            "source_shape": list(self.source_shape),
            "source_affine": np.asarray(self.source_affine).tolist(),
            "orientation": self.orientation,
            "size": self.size,
        }
        if self.pixel_mm is not None:
            data["pixel_mm"] = self.pixel_mm
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Geometry:
        pixel_mm = data.get("pixel_mm")
        return cls(
            source_shape=tuple(data["source_shape"]),
            source_affine=np.asarray(data["source_affine"], dtype=np.float64),
            orientation=str(data["orientation"]),
            size=int(data["size"]),
            pixel_mm=None if pixel_mm is None else float(pixel_mm),
        )

    @property
    def to_canonical(self) -> npt.NDArray[np.float64]:
        """nibabel orientation transform from the source file axes to the canonical ones."""
        return _orientation_transform(self.source_affine, self.orientation)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        permuted = [0, 0, 0]
        for source_axis, (target_axis, _) in enumerate(self.to_canonical):
            permuted[int(target_axis)] = self.source_shape[::-1][source_axis]
        return permuted[2], permuted[1], permuted[0]

    @property
    def canonical_affine(self) -> npt.NDArray[np.float64]:
        return self.source_affine @ inv_ornt_aff(self.to_canonical, self.source_shape[::-1])

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the reoriented source, array order (slice, row, column)."""
        sizes = np.sqrt((self.canonical_affine[:3, :3] ** 2).sum(axis=0))[::-1]
        return float(sizes[0]), float(sizes[1]), float(sizes[2])

    @property
    def model_spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) on the model grid, array order (slice, row, column)."""
        slice_mm, row_mm, col_mm = self.canonical_spacing
        if self.pixel_mm is not None:
            return slice_mm, self.pixel_mm, self.pixel_mm
        rows, cols = self.canonical_shape[1:]
        return slice_mm, row_mm * rows / self.size, col_mm * cols / self.size

    @property
    def window(self) -> InPlaneWindow:
        """Where the model grid lies on the reoriented source slice."""
        return in_plane_window(
            self.canonical_shape[1:], self.canonical_spacing[1:], self.size, self.pixel_mm
        )

    def labels_to_source(self, labels: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
        """Labels on the model grid ``(slices, size, size)`` to the source grid, nearest."""
        canonical = self.window.to_source(labels.astype(np.float32), order=0)
        return self._from_canonical(canonical.astype(np.uint8))

    def probabilities_to_source(
        self, probabilities: npt.NDArray[np.floating]
    ) -> npt.NDArray[np.uint8]:
        """Class probabilities ``(slices, size, size, classes)`` to a source-grid label map.

        Probabilities are interpolated (linear) before the arg-max, which gives smoother and
        more faithful boundaries than resampling hard labels. With two classes the resampling
        is linear and preserves sums, so the arg-max is foreground where the resampled
        foreground exceeds 0.5: one channel is resampled instead of two.
        """
        window = self.window
        if probabilities.shape[-1] == 2:
            foreground = window.to_source(probabilities[..., 1], order=1)
            return self._from_canonical((foreground > 0.5).astype(np.uint8))
        # beyond the model grid (a crop) nothing was predicted: background
        channels = [
            window.to_source(probabilities[..., c], order=1, outside=float(c == 0))
            for c in range(probabilities.shape[-1])
        ]
        labels = np.argmax(np.stack(channels, axis=-1), axis=-1).astype(np.uint8)
        return self._from_canonical(labels)

    def _from_canonical(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        back = ornt_transform(
            axcodes2ornt(tuple(self.orientation)), io_orientation(self.source_affine)
        )
        file_order = apply_orientation(array.transpose(2, 1, 0), back)
        return np.ascontiguousarray(file_order.transpose(2, 1, 0))


def _orientation_transform(affine: npt.NDArray[np.float64], codes: str) -> npt.NDArray[np.float64]:
    return ornt_transform(io_orientation(affine), axcodes2ornt(tuple(codes)))


def reorient(volume: Volume, codes: str) -> npt.NDArray[Any]:
    """``volume.array`` with its axes flipped/permuted so the file axes read ``codes``."""
    transform = _orientation_transform(volume.affine, codes)
    file_order = apply_orientation(volume.array.transpose(2, 1, 0), transform)
    return np.ascontiguousarray(file_order.transpose(2, 1, 0))


def zscore(array: npt.NDArray[np.floating], where: str = "<in memory>") -> npt.NDArray[np.float32]:
    """Zero mean, unit variance over the whole volume; refuse NaN/Inf and constant scans."""
    array = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise VolumeError(where, f"scan holds {int(np.sum(~np.isfinite(array)))} NaN/Inf voxels")
    mean = float(array.mean(dtype=np.float64))
    std = float(array.std(dtype=np.float64))
    if std < 1e-8:
        raise VolumeError(where, "scan is constant (zero intensity variance); nothing to segment")
    return ((array - mean) / std).astype(np.float32)


def binarize(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """SAML: every label > 0 is prostate."""
    return (np.asarray(labels) > 0).astype(np.uint8)


@dataclass(frozen=True)
class InPlaneWindow:
    """The model grid's place on a source slice, per in-plane axis: model pixel ``o`` lies at
    source coordinate ``start + (o + 0.5) * step - 0.5`` (pixel centres; ``step`` source
    pixels per model pixel). The whole slice is ``start = 0``, ``step = n_in / n_out``."""

    source_shape: tuple[int, int]
    size: int
    start: tuple[float, float]
    step: tuple[float, float]
    # SAML's map, edge to edge (resample_in_plane), rather than a crop or pad in millimetres
    whole_slice: bool = False

    def to_model(
        self, array: npt.NDArray[np.floating], order: int = 1, outside: float | None = None
    ) -> npt.NDArray[np.float32]:
        """``(slices, rows, cols)`` on the source slice to ``(slices, size, size)``; beyond
        the slice, ``outside`` (default: the array's minimum)."""
        if self.whole_slice:
            return resample_in_plane(array, (self.size, self.size), order)
        array = np.asarray(array, dtype=np.float32)
        fill = float(array.min()) if outside is None else outside
        return _affine_in_plane(
            array, np.array(self.step), np.array(self.start), (self.size, self.size), order, fill
        )

    def to_source(
        self, array: npt.NDArray[np.floating], order: int = 1, outside: float = 0.0
    ) -> npt.NDArray[np.float32]:
        """``(slices, size, size)`` on the model grid back to the source slice; the source
        pixels the model grid did not cover get ``outside`` (background)."""
        if self.whole_slice:
            return resample_in_plane(array, self.source_shape, order)
        step, start = np.array(self.step), np.array(self.start)
        # inverting o -> start + (o + 0.5) step - 0.5: c -> (c + 0.5 - start) / step - 0.5
        inverse_start = -start / step
        array = np.asarray(array, dtype=np.float32)
        return _affine_in_plane(array, 1 / step, inverse_start, self.source_shape, order, outside)


def in_plane_window(
    source_shape: tuple[int, int],
    source_spacing: tuple[float, float],
    size: int,
    pixel_mm: float | None,
) -> InPlaneWindow:
    """The model grid on a source slice of ``source_shape`` pixels of ``source_spacing`` mm:
    the whole slice, or ``size`` pixels of ``pixel_mm`` centred on it."""
    rows, cols = (int(n) for n in source_shape)
    if pixel_mm is None:
        return InPlaneWindow(
            (rows, cols), size, (0.0, 0.0), (rows / size, cols / size), whole_slice=True
        )
    step = tuple(pixel_mm / float(spacing) for spacing in source_spacing)
    start = tuple((n - size * s) / 2 for n, s in zip((rows, cols), step, strict=True))
    return InPlaneWindow((rows, cols), size, start, step)  # type: ignore[arg-type]


def _affine_in_plane(
    array: npt.NDArray[np.float32],
    step: npt.NDArray[np.float64],
    start: npt.NDArray[np.float64],
    shape: tuple[int, int],
    order: int,
    outside: float | None,
) -> npt.NDArray[np.float32]:
    """Output pixel ``o`` samples input coordinate ``start + (o + 0.5) * step - 0.5`` per
    in-plane axis, anti-aliased where it shrinks (a Gaussian of sigma ``(step - 1) / 2``, as
    scikit-image does); beyond the input ``outside``, or the nearest edge pixel for None."""
    if order > 0 and np.any(step > 1):
        sigma = (0.0, *np.maximum(0.0, (step - 1) / 2))
        array = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest")
    return ndimage.affine_transform(
        array,
        np.array([1.0, *step]),
        offset=np.array([0.0, *(start + 0.5 * step - 0.5)]),
        output_shape=(array.shape[0], *shape),
        order=order,
        mode="nearest" if outside is None else "constant",
        cval=0.0 if outside is None else outside,
        prefilter=False,
    )


def resample_in_plane(
    array: npt.NDArray[np.floating], shape: tuple[int, int], order: int = 1
) -> npt.NDArray[np.float32]:
    """Resample each slice of ``(slices, rows, cols)`` to ``shape`` with pixel-centre alignment.

    Output pixel ``o`` samples input coordinate ``(o + 0.5) * n_in / n_out - 0.5`` (both grids
    cover the same field of view edge to edge), the convention that makes the map from ``A``
    to ``B`` and the one from ``B`` to ``A`` exact inverses. Shrinking is anti-aliased.
    """
    array = np.asarray(array, dtype=np.float32)
    rows, cols = array.shape[1:]
    if (rows, cols) == tuple(shape):
        return array.copy()  # the identity map: interpolating would only cost time
    scale = np.array([rows / shape[0], cols / shape[1]])
    return _affine_in_plane(array, scale, np.zeros(2), shape, order, outside=None)


def prepare_volume(
    image: Volume, config: PreprocessConfig
) -> tuple[npt.NDArray[np.float32], Geometry]:
    """Scan to model grid: reorient, z-score, resample. Returns ``(slices, size, size)``."""
    canonical = reorient(image, config.orientation)
    where = str(image.source or "<in memory>")
    geometry = Geometry(
        source_shape=image.shape,
        source_affine=image.affine,
        orientation=config.orientation,
        size=config.size,
        pixel_mm=config.pixel_mm,
    )
    if config.intensity == "local":
        canonical = divide_by_local_mean(canonical, geometry.canonical_spacing[1:], where)
    normalised = zscore(canonical, where)
    return geometry.window.to_model(normalised, order=1), geometry


def divide_by_local_mean(
    array: npt.NDArray[np.floating], spacing_mm: tuple[float, float], where: str = "<in memory>"
) -> npt.NDArray[np.float32]:
    """Each slice of ``(slices, rows, cols)`` divided by its in-plane Gaussian mean of
    :data:`LOCAL_MEAN_SIGMA_MM`, plus a tenth of the volume's mean so that dark air does not
    blow up; a smooth multiplicative field (a coil's sensitivity) cancels out."""
    array = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise VolumeError(where, f"scan holds {int(np.sum(~np.isfinite(array)))} NaN/Inf voxels")
    shifted = array - min(float(array.min()), 0.0)  # a field multiplies signal, which is >= 0
    sigma = (0.0, *(LOCAL_MEAN_SIGMA_MM / float(mm) for mm in spacing_mm))
    local = ndimage.gaussian_filter(shifted, sigma=sigma, mode="nearest")
    floor = max(0.1 * float(shifted.mean()), 1e-6)
    return (shifted / (local + floor)).astype(np.float32)


def _window(volume: Volume, config: PreprocessConfig) -> InPlaneWindow:
    """The model grid on ``volume``'s slices, as :func:`prepare_volume` places it."""
    geometry = Geometry(
        volume.shape, volume.affine, config.orientation, config.size, config.pixel_mm
    )
    return geometry.window


def prepare_labels(labels: Volume, config: PreprocessConfig) -> npt.NDArray[np.uint8]:
    """Mask to model grid: reorient like the scan, binarise, resample linearly, threshold 0.5."""
    canonical = reorient(labels, config.orientation)
    mask = binarize(canonical).astype(np.float32)
    resampled = _window(labels, config).to_model(mask, order=1, outside=0.0)
    return (resampled >= 0.5).astype(np.uint8)


def prepare_probability(probability: Volume, config: PreprocessConfig) -> npt.NDArray[np.float32]:
    """A probability map on a scan's source grid to the model grid, voxel for voxel with
    :func:`prepare_volume`'s image: the same reorientation and in-plane resampling (linear,
    anti-aliased when shrinking), without the z-score; values stay in [0, 1]."""
    canonical = reorient(probability, config.orientation).astype(np.float32, copy=False)
    resampled = _window(probability, config).to_model(canonical, order=1, outside=0.0)
    return np.clip(resampled, 0.0, 1.0)


def stack_context(
    volume: npt.NDArray[np.float32], index: int, context: int
) -> npt.NDArray[np.float32]:
    """Slices ``index - context//2 .. index + context//2`` as channels ``(rows, cols, context)``.

    Slices beyond the ends repeat the edge slice, so every slice has a full stack.
    """
    half = context // 2
    picks = np.clip(np.arange(index - half, index + half + 1), 0, volume.shape[0] - 1)
    return np.moveaxis(volume[picks], 0, -1)


def gland_extent(mask: npt.NDArray[np.integer]) -> tuple[int, int] | None:
    """First and last slice (inclusive) holding prostate, or None for an empty mask."""
    slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    return None if slices.size == 0 else (int(slices[0]), int(slices[-1]))


def training_slices(
    mask: npt.NDArray[np.integer], outside_share: float, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Slices to train on: all inside the gland's z-extent (SAML) plus a share of the others.

    ``outside_share`` is relative to the number of inside slices (0.25 adds one outside slice
    for every four inside), drawn at random without replacement.
    """
    return slices_around(gland_extent(mask), mask.shape[0], outside_share, rng)


#: The share of an unlabelled scan's slices, centred, taken as the gland's z-extent: a
#: prostate MRI is planned around the gland. Measured on TAPS's masks of the six real axial
#: T2 series in ../shared (Prostate-3T, PROSTATEx; 19-21 slices of 3-3.6 mm): the gland spans
#: 53-70 % of the slices, its centre within two slices of the stack's.
UNLABELLED_MIDDLE_SHARE = 0.6


def middle_extent(slices: int, share: float = UNLABELLED_MIDDLE_SHARE) -> tuple[int, int]:
    """First and last slice (inclusive) of the centred ``share`` of ``slices`` (at least one):
    where the gland lies in a scan without a mask."""
    if not 0 < share <= 1:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    if slices < 1:
        raise ValueError(f"a scan has at least one slice, got {slices}")
    count = max(1, round(share * slices))
    first = (slices - count) // 2
    return first, first + count - 1


def slices_around(
    extent: tuple[int, int] | None,
    slices: int,
    outside_share: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.int64]:
    """Slices ``extent[0]..extent[1]`` of ``0..slices-1`` plus ``outside_share`` of as many
    others, drawn at random without replacement (see :func:`training_slices`)."""
    if outside_share < 0:
        raise ValueError(f"outside_share must be >= 0, got {outside_share}")
    all_slices = np.arange(slices)
    inside = all_slices[:0] if extent is None else all_slices[extent[0] : extent[1] + 1]
    outside = np.setdiff1d(all_slices, inside)
    wanted = min(outside.size, round(outside_share * max(inside.size, 1)))
    extra = rng.choice(outside, size=wanted, replace=False) if wanted else outside[:0]
    return np.sort(np.concatenate([inside, extra])).astype(np.int64)
