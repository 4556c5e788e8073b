"""Imaging a synthetic pelvis the way one site's scanner would.

The steps follow the physics in order: plan the slab and field of view around the gland;
sample the tissues on the site's grid with several sub-samples through each slice (partial
volume of thick slices); give each tissue its T2-weighted signal for the site's field strength
and echo/repetition times, times a smooth texture; multiply by the receive coil's sensitivity;
add complex Gaussian noise, blur with the point spread function and take the magnitude (so the
noise is Rician); undo part of the coil shading as the vendor's normalisation does; and store
in the vendor's units. The label is the gland's partial-volume fraction above one half, on the
same grid, so mask and image agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from napari_kdseg.data.phantom.anatomy import (
    TISSUE_PROPERTIES,
    FloatArray,
    Layer,
    Pelvis,
    Shape,
    Tissue,
    Vector,
)
from napari_kdseg.data.phantom.sites import NATIVE_MATRIX, SiteProtocol
from napari_kdseg.data.volume import affine_from_lps

# Sub-samples through each slice are at most this far apart (mm): finer costs time, coarser
# loses the partial volume that makes thick slices look soft.
SUB_SLICE_STEP_MM = 1.2

# Distances are evaluated on points at most this far apart in plane (mm) and interpolated
# between: finer pixels (BIDMC's 0.25 mm) add detail to the noise, not to the anatomy.
DISTANCE_GRID_MM = 0.8

# Slab planning: the gland must sit inside the field of view with this margin (mm), and the
# slab must keep at least this many empty slices (and mm) above and below it.
FOV_MARGIN_MM = 6.0
MIN_EMPTY_SLICES = 2
MIN_EMPTY_MM = 6.0
# A technologist centres on the gland to within this (mm).
CENTRING_JITTER_MM = 12.0

# Correlation lengths (mm) of the texture fields and the width of the strands' zero-crossings.
FINE_TEXTURE_MM = 1.5
COARSE_TEXTURE_MM = 8.0
STRAND_TEXTURE_MM = 5.0
STRAND_WIDTH = 0.07


@dataclass(frozen=True)
class ScanGeometry:
    """Where and how finely one case is sampled, and the scanner state for it.

    The voxel axes are LPS (columns to the patient's left, rows to posterior, slices to
    superior), as in DICOM; ``origin_lps`` is the centre of voxel ``(0, 0, 0)`` in mm.
    """

    size: int
    spacing_mm: float
    native_spacing_mm: float
    slice_thickness_mm: float
    slices: int
    origin_lps: tuple[float, float, float]
    field_t: float
    receiver_gain: float

    @property
    def fov_mm(self) -> float:
        """Side of the square in-plane field of view."""
        return self.spacing_mm * self.size

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        """nibabel affine (voxel ``(i, j, k)`` to RAS+ mm) of this grid."""
        spacing = (self.spacing_mm, self.spacing_mm, self.slice_thickness_mm)
        return affine_from_lps(np.eye(3), spacing, self.origin_lps)

    def column_positions(self) -> FloatArray:
        """Patient ``x`` (mm) of each column's centre."""
        return (self.origin_lps[0] + self.spacing_mm * np.arange(self.size)).astype(np.float32)

    def row_positions(self) -> FloatArray:
        """Patient ``y`` (mm) of each row's centre."""
        return (self.origin_lps[1] + self.spacing_mm * np.arange(self.size)).astype(np.float32)

    def slice_positions(self) -> FloatArray:
        """Patient ``z`` (mm) of each slice's centre."""
        return (self.origin_lps[2] + self.slice_thickness_mm * np.arange(self.slices)).astype(
            np.float32
        )

    @property
    def sub_slices(self) -> int:
        """Sub-samples per slice for partial volume (at least two)."""
        return max(2, math.ceil(self.slice_thickness_mm / SUB_SLICE_STEP_MM))

    def sub_slice_positions(self) -> FloatArray:
        """Patient ``z`` of every sub-sample, slice by slice, spread evenly across each slice."""
        per_slice = self.sub_slices
        offsets = ((np.arange(per_slice) + 0.5) / per_slice - 0.5) * self.slice_thickness_mm
        return (self.slice_positions()[:, None] + offsets[None, :]).ravel().astype(np.float32)


@dataclass(frozen=True)
class ImagedCase:
    """One acquisition: the stored image, the label, and the ground truth behind them.

    ``tissues`` is the tissue at the middle sub-sample of every voxel (the truth the tests
    and figures measure regions with); ``sensitivity`` is the receive coil's sensitivity
    (1 at the gland centre), before the vendor's correction removed part of it.
    """

    image: FloatArray
    label: npt.NDArray[np.uint8]
    tissues: npt.NDArray[np.uint8]
    sensitivity: FloatArray
    geometry: ScanGeometry


def plan_scan(
    protocol: SiteProtocol, pelvis: Pelvis, size: int, rng: np.random.Generator
) -> ScanGeometry:
    """Choose spacing, slab and field-of-view placement for one case, as a technologist would.

    Every random draw happens before ``size`` is used, so the physical field of view, slice
    thickness, slice count and position are the same at every matrix size.
    """
    native_spacing = float(rng.uniform(*protocol.in_plane_spacing_mm))
    thickness = float(rng.uniform(*protocol.slice_thickness_mm))
    field_t = float(rng.choice(protocol.field_strengths_t))
    receiver_gain = float(np.exp(rng.normal(0.0, 0.1)))
    centring = rng.uniform(-1.0, 1.0, size=2)
    coverage = float(rng.uniform(60.0, 90.0))
    slab_shift = float(rng.uniform())

    fov = native_spacing * NATIVE_MATRIX
    lower, upper = pelvis.gland_bounds()
    centre = (lower + upper) / 2
    half_extent = (upper - lower) / 2
    room = np.maximum(fov / 2 - FOV_MARGIN_MM - half_extent[:2], 0.0)
    fov_centre = centre[:2] + centring * np.minimum(room, CENTRING_JITTER_MM)

    margin = max(MIN_EMPTY_SLICES * thickness, MIN_EMPTY_MM)
    extent = float(upper[2] - lower[2])
    slices = math.ceil(max(coverage, extent + 2 * margin) / thickness)
    slack = slices * thickness - extent - 2 * margin
    first_edge = float(lower[2]) - margin - slab_shift * slack

    spacing = fov / size
    origin = (
        float(fov_centre[0] - spacing * (size - 1) / 2),
        float(fov_centre[1] - spacing * (size - 1) / 2),
        first_edge + thickness / 2,
    )
    return ScanGeometry(
        size=size,
        spacing_mm=spacing,
        native_spacing_mm=native_spacing,
        slice_thickness_mm=thickness,
        slices=slices,
        origin_lps=origin,
        field_t=field_t,
        receiver_gain=receiver_gain,
    )


def acquire(
    pelvis: Pelvis,
    protocol: SiteProtocol,
    geometry: ScanGeometry,
    texture_rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> ImagedCase:
    """Image ``pelvis`` with ``protocol`` on ``geometry``: stored image, label and truth.

    Texture and noise have their own generators, so one anatomy can be imaged twice with
    independent noise (the two-acquisition SNR measurement) or the same texture.
    """
    x, y = geometry.column_positions(), geometry.row_positions()
    tissues_sub, gland_sub = rasterize(pelvis, x, y, geometry.sub_slice_positions())
    shape_sub = (geometry.slices, geometry.sub_slices, geometry.size, geometry.size)
    tissues_sub = tissues_sub.reshape(shape_sub)
    label = (gland_sub.reshape(shape_sub).mean(axis=1) > 0.5).astype(np.uint8)

    signal = tissue_signals(protocol, geometry.field_t)
    properties = [TISSUE_PROPERTIES[tissue] for tissue in Tissue]
    textures = _texture_fields(texture_rng, geometry)
    ideal = _slice_mean(signal, tissues_sub)
    for name, field in textures.items():
        amplitude = np.array([getattr(p, name) for p in properties], dtype=np.float32)
        ideal += _slice_mean(signal * amplitude, tissues_sub) * field
    np.maximum(ideal, 0.0, out=ideal)

    z = geometry.slice_positions()[:, None, None]
    # The coils sit against the anatomy (balloon in the rectum, arrays on the skin), so their
    # geometry lives in template space like the tissues.
    template_x, template_y = pelvis.warp.to_template(x[None, :], y[:, None])
    sensitivity = coil_sensitivity(
        protocol, pelvis, geometry.field_t, template_x[None], template_y[None], z
    )
    sensitivity = np.broadcast_to(sensitivity, ideal.shape)
    fat = signal[Tissue.FAT]
    magnitude = _noisy_magnitude(
        ideal * sensitivity,
        sigma=fat / protocol.snr(geometry.field_t, geometry.slice_thickness_mm),
        psf_pixels=_psf_pixels(protocol.acquired_pixel_mm, geometry.spacing_mm),
        rng=noise_rng,
    )
    # The vendor's normalisation divides by an estimate of the sensitivity to a power.
    magnitude /= sensitivity ** np.float32(protocol.bias_correction)

    vendor = protocol.vendor_scale
    image = magnitude * np.float32(vendor.fat_level / fat * geometry.receiver_gain)
    if vendor.stored_dtype == "int16":
        np.rint(image, out=image)
    np.clip(image, 0.0, vendor.ceiling, out=image)
    middle = geometry.sub_slices // 2
    return ImagedCase(
        image=image,
        label=label,
        tissues=np.ascontiguousarray(tissues_sub[:, middle]),
        sensitivity=np.ascontiguousarray(sensitivity),
        geometry=geometry,
    )


def tissue_signals(protocol: SiteProtocol, field_t: float) -> FloatArray:
    """T2-weighted spin-echo signal of every tissue: ``PD * exp(-TE/T2) * (1 - exp(-TR/T1))``.

    Indexed by :class:`Tissue`; the site's echo and repetition times and the field strength
    (through T1 and T2) set the contrast between tissues.
    """
    values = []
    for tissue in Tissue:
        properties = TISSUE_PROPERTIES[tissue]
        t1, t2 = properties.relaxation_ms(field_t)
        decay = math.exp(-protocol.echo_time_ms / t2)
        recovery = 1.0 - math.exp(-protocol.repetition_time_ms / t1)
        values.append(properties.proton_density * decay * recovery)
    return np.asarray(values, dtype=np.float32)


def coil_sensitivity(
    protocol: SiteProtocol,
    pelvis: Pelvis,
    field_t: float,
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
) -> FloatArray:
    """Receive sensitivity of the site's coil at broadcastable positions, 1 at the gland centre.

    Endorectal: a loop on the balloon's axis whose sensitivity falls off steeply with distance
    (very bright rectal wall, moderately bright gland, dark far field), plus a small pelvic-array
    floor. Surface: anterior and posterior arrays on the skin, brighter towards both body
    surfaces. None (body coil): flat, with the mild central brightening of 3 T's dielectric effect.
    """
    gx, gy, gz = (np.float32(value) for value in pelvis.gland_center)
    if protocol.coil == "endorectal" and pelvis.balloon is not None:
        balloon = pelvis.balloon
        bx, by, bz = (np.float32(value) for value in balloon.center)

        gland_distance = np.float32(math.dist(pelvis.gland_center[:2], balloon.center[:2]))

        def falloff(px: FloatArray, py: FloatArray, pz: FloatArray) -> FloatArray:
            beyond_ends = np.maximum(np.abs(pz - bz) - np.float32(balloon.half_length), 0)
            distance = np.sqrt((px - bx) ** 2 + (py - by) ** 2 + beyond_ends**2)
            distance = np.maximum(distance, np.float32(0.6 * balloon.radius))
            return np.float32(0.15) + (gland_distance / distance) ** np.float32(2.6)

    elif protocol.coil == "surface":
        body = pelvis.body
        cx, cy = (np.float32(value) for value in body.center)
        half_width, half_depth = (np.float32(value) for value in body.semi_axes)

        def falloff(px: FloatArray, py: FloatArray, pz: FloatArray) -> FloatArray:
            across = np.sqrt(np.maximum(1 - ((px - cx) / half_width) ** 2, 0)) * half_depth
            depth_anterior = np.maximum(py - (cy - across), 0)
            depth_posterior = np.maximum(cy + across - py, 0)
            decay = np.float32(60.0)
            return (
                np.float32(0.3) + np.exp(-depth_anterior / decay) + np.exp(-depth_posterior / decay)
            )

    else:
        cx, cy = (np.float32(value) for value in pelvis.body.center)
        central = np.float32(0.15 if field_t >= 3.0 else 0.04)

        def falloff(px: FloatArray, py: FloatArray, pz: FloatArray) -> FloatArray:
            r2 = (px - cx) ** 2 + (py - cy) ** 2
            return 1 + central * np.exp(-r2 / np.float32(2 * 90.0**2))

    at_gland = falloff(gx, gy, gz)
    return (falloff(x, y, z) / at_gland).astype(np.float32)


def rasterize(
    pelvis: Pelvis, x: FloatArray, y: FloatArray, z: FloatArray
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """Tissue index and gland membership at every point of the grid ``z x y x x``.

    Layers are painted in order, each only inside its bounding box (widened by the soft
    tissue warp); the gland is painted last, then its zones inside the capsule. Returns
    arrays of shape ``(len(z), len(y), len(x))``. On grids finer than
    :data:`DISTANCE_GRID_MM` the distances are evaluated on every few points in plane and
    interpolated linearly: distance fields are smooth, so the sign, and with it the tissue
    map, barely changes, and the finest sites cost several times less.
    """
    shape = (len(z), len(y), len(x))
    template_x, template_y = pelvis.warp.to_template(x[None, :], y[:, None])
    reach = pelvis.warp.max_displacement
    spacing = float(x[1] - x[0]) if len(x) > 1 else DISTANCE_GRID_MM
    stride = max(1, int(DISTANCE_GRID_MM / spacing + 1e-3))  # float32 positions: round up

    def region_of(part: Shape) -> tuple[slice, slice, slice] | None:
        lower, upper = part.bounds()
        widen = np.array([reach, reach, 0.0])
        return _region(lower - widen, upper + widen, x, y, z)

    def distance_in(part: Shape, region: tuple[slice, slice, slice]) -> FloatArray:
        z_slice, y_slice, x_slice = region
        plane_x = template_x[y_slice, x_slice]
        plane_y = template_y[y_slice, x_slice]
        rows = _Interpolation(plane_x.shape[0], stride)
        columns = _Interpolation(plane_x.shape[1], stride)
        coarse = np.ix_(rows.samples, columns.samples)
        distance = part.distance(
            plane_x[coarse][None], plane_y[coarse][None], z[z_slice, None, None]
        )
        return columns.expand(rows.expand(distance, axis=-2), axis=-1)

    tissues = np.zeros(shape, dtype=np.uint8)
    for layer in pelvis.layers:
        region = region_of(layer.shape)
        if region is not None:
            _paint(tissues[region], distance_in(layer.shape, region), layer)

    gland = np.zeros(shape, dtype=np.bool_)
    core = np.zeros(shape, dtype=np.bool_)
    region = region_of(pelvis.gland)
    if region is not None:
        distance = distance_in(pelvis.gland, region)
        inside = distance < 0
        gland[region] = inside
        core[region] = distance < -pelvis.capsule_mm
        _assign(tissues[region], inside, Tissue.PROSTATE_CAPSULE)
        _assign(tissues[region], core[region], Tissue.PERIPHERAL_ZONE)
    for zone in pelvis.zones:
        zone_region = region_of(zone.shape)
        if zone_region is not None:
            distance = distance_in(zone.shape, zone_region)
            _paint(tissues[zone_region], distance, zone, within=core[zone_region])
    return tissues, gland


class _Interpolation:
    """Linear interpolation from every ``stride``-th point (and the last) back to all points."""

    def __init__(self, count: int, stride: int) -> None:
        self.samples = np.unique(np.r_[np.arange(0, count, stride), count - 1])
        self.identity = len(self.samples) == count
        if not self.identity:
            position = np.arange(count)
            below = np.searchsorted(self.samples, position, side="right") - 1
            self.below = np.minimum(below, len(self.samples) - 2)
            gap = self.samples[self.below + 1] - self.samples[self.below]
            self.weight = ((position - self.samples[self.below]) / gap).astype(np.float32)

    def expand(self, values: FloatArray, axis: int) -> FloatArray:
        """``values`` sampled at :attr:`samples` along ``axis``, interpolated to every point."""
        if self.identity:
            return values
        shape = [1] * values.ndim
        shape[axis] = len(self.weight)
        weight = self.weight.reshape(shape)
        low = np.take(values, self.below, axis=axis)
        high = np.take(values, self.below + 1, axis=axis)
        return low + (high - low) * weight


def _region(
    lower: Vector, upper: Vector, x: FloatArray, y: FloatArray, z: FloatArray
) -> tuple[slice, slice, slice] | None:
    """Index slices ``(z, y, x)`` of the grid points inside the box ``lower``-``upper``."""
    ranges = []
    for axis, low, high in (
        (z, lower[2], upper[2]),
        (y, lower[1], upper[1]),
        (x, lower[0], upper[0]),
    ):
        start = int(np.searchsorted(axis, low, side="left"))
        stop = int(np.searchsorted(axis, high, side="right"))
        if stop <= start:
            return None
        ranges.append(slice(start, stop))
    return ranges[0], ranges[1], ranges[2]


def _paint(
    target: npt.NDArray[np.uint8],
    distance: FloatArray,
    layer: Layer,
    within: npt.NDArray[np.bool_] | None = None,
) -> None:
    """Write ``layer``'s tissues into ``target`` where the distance is below each depth."""
    for depth, tissue in layer.paints:
        mask = distance < depth
        if within is not None:
            mask = mask & within
        _assign(target, mask, tissue)


def _assign(target: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], value: int) -> None:
    """``target[mask] = value`` for a mask that may lack the slice extent (extruded shapes)."""
    if mask.shape == target.shape:
        target[mask] = value
    elif mask.shape[0] == 1 and mask.shape[1:] == target.shape[1:]:
        target[:, mask[0]] = value  # one plane's mask applied to every slice: no 3D mask built
    else:
        target[np.broadcast_to(mask, target.shape)] = value


def _slice_mean(values: FloatArray, tissues_sub: npt.NDArray[np.uint8]) -> FloatArray:
    """Per-tissue ``values`` looked up at every sub-sample and averaged through each slice."""
    return values[tissues_sub].mean(axis=1, dtype=np.float32)


def _texture_fields(rng: np.random.Generator, geometry: ScanGeometry) -> dict[str, FloatArray]:
    """Smooth random fields on the slice grid, keyed by the texture amplitude they scale.

    ``fine`` and ``coarse`` have unit variance at their correlation length; ``strands`` is
    near one on the thin zero-crossing lines of a medium field (curvilinear septa and ducts).
    """
    fine = _smooth_field(rng, geometry, FINE_TEXTURE_MM)
    coarse = _smooth_field(rng, geometry, COARSE_TEXTURE_MM)
    medium = _smooth_field(rng, geometry, STRAND_TEXTURE_MM)
    strands = np.exp(-((medium / np.float32(STRAND_WIDTH)) ** 2))
    return {"fine": fine, "coarse": coarse, "strands": strands}


def _smooth_field(
    rng: np.random.Generator, geometry: ScanGeometry, correlation_mm: float
) -> FloatArray:
    """Gaussian random field with correlation length ``correlation_mm``, on the slice grid.

    White noise on a grid of ``correlation_mm`` cells is smoothed along ``z`` and then spread
    onto the pixels by a Gaussian kernel written as a matrix, so the in-plane smoothing and
    interpolation are two small matrix products at any matrix size. Where a pixel is larger
    than the correlation length the texture averages out inside it, so the amplitude shrinks
    by ``correlation / pixel``.
    """
    cells = math.ceil(geometry.fov_mm / correlation_mm) + 3
    noise = rng.standard_normal((geometry.slices, cells, cells), dtype=np.float32)
    sigma_slices = correlation_mm / geometry.slice_thickness_mm
    noise = ndimage.gaussian_filter1d(noise, sigma_slices, axis=0, mode="wrap")
    noise /= np.float32(max(float(noise.std()), 1e-6))
    spread = _spreading_matrix(geometry.size, geometry.spacing_mm, cells, correlation_mm)
    spread *= np.float32(correlation_mm / max(correlation_mm, geometry.spacing_mm))
    return np.matmul(np.matmul(spread, noise), spread.T)


def _spreading_matrix(
    size: int, spacing_mm: float, cells: int, correlation_mm: float
) -> FloatArray:
    """Gaussian weights from noise cells to pixels along one axis, rows of unit energy.

    Unit row energy makes the spread field's variance one at every pixel, edges included.
    """
    pixels = (np.arange(size) - (size - 1) / 2) * spacing_mm
    centres = (np.arange(cells) - (cells - 1) / 2) * correlation_mm
    weights = np.exp(-0.5 * ((pixels[:, None] - centres[None, :]) / correlation_mm) ** 2)
    weights /= np.sqrt((weights**2).sum(axis=1, keepdims=True))
    return weights.astype(np.float32)


def _noisy_magnitude(
    signal: FloatArray, sigma: float, psf_pixels: float, rng: np.random.Generator
) -> FloatArray:
    """Magnitude of (signal + complex white noise) blurred by a Gaussian point spread function.

    The noise is scaled so that after the blur its standard deviation per channel is ``sigma``;
    taking the magnitude makes it Rician (a positive floor in air, Gaussian where bright).
    """
    sigma_white = np.float32(sigma / _blur_noise_gain(psf_pixels))
    blur = (0.0, psf_pixels, psf_pixels)
    real = signal + sigma_white * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma_white * rng.standard_normal(signal.shape, dtype=np.float32)
    real = ndimage.gaussian_filter(real, blur)
    imaginary = ndimage.gaussian_filter(imaginary, blur)
    return np.hypot(real, imaginary)


def _psf_pixels(acquired_pixel_mm: float, spacing_mm: float) -> float:
    """Width (Gaussian sigma, in pixels) of the in-plane point spread function.

    The acquisition's sinc-like PSF has a sigma of about half an acquired pixel, so images
    zero-filled to a finer grid (BIDMC's 0.25 mm) are visibly smoother; every pixel also
    averages over its own area, which keeps coarse matrices free of staircase edges.
    """
    return math.hypot(0.5 * acquired_pixel_mm / spacing_mm, 0.45)


@cache
def _blur_noise_gain(psf_pixels: float) -> float:
    """Standard deviation of unit white noise after the 2D Gaussian blur (root sum of squares)."""
    radius = math.ceil(4 * psf_pixels) + 1
    impulse = np.zeros((2 * radius + 1, 2 * radius + 1))
    impulse[radius, radius] = 1.0
    kernel = ndimage.gaussian_filter(impulse, psf_pixels)
    return float(np.sqrt((kernel**2).sum()))
