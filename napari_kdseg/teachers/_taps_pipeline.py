"""The array steps of TAPS's inference pipeline, in numpy and scipy.

TAPS (``taps/inference.py`` of lavlab-taps 1.1.2, MIT licence) runs a MONAI pipeline:
``Orientationd`` -> ``Spacingd`` -> ``NormalizeIntensityd`` -> ``CropForegroundd`` ->
``sliding_window_inference`` -> Gaussian blur of the logits -> ``Invertd`` back to the source
grid. Each function here reimplements one of those MONAI steps with the semantics of MONAI
1.5 (the defaults TAPS relies on are spelled out where they matter), so the teacher needs
neither PyTorch nor MONAI. Arrays are in file order ``(i, j, k)`` with a nibabel RAS+ affine,
as MONAI's NIfTI reader gives them; :mod:`napari_kdseg.teachers.taps` converts from the
project's :class:`~napari_kdseg.data.volume.Volume`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import nibabel.orientations as nio
import numpy as np
import numpy.typing as npt
from scipy import ndimage

FloatArray = npt.NDArray[np.floating]
Box = tuple[tuple[int, int, int], tuple[int, int, int]]

#: MONAI's tolerance on affines (``monai.data.utils.AFFINE_TOL``): spacings and transforms
#: this close to the target count as equal, and no resampling happens.
AFFINE_TOL = 1e-3


# --- Orientationd(axcodes="RAS") -------------------------------------------------------------


def ras_orientation(affine: FloatArray) -> npt.NDArray[np.float64]:
    """The nibabel orientation transform that takes file axes to RAS, as MONAI's
    ``Orientation`` computes it (``io_orientation`` of the affine, then ``ornt_transform``)."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt("RAS"))


def to_ras(
    data: FloatArray, affine: FloatArray
) -> tuple[FloatArray, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Flip and transpose ``data`` so its axes run towards R, A and S (no interpolation).

    Mirrors ``monai.transforms.Orientationd(axcodes="RAS")``. Returns the reoriented array,
    its affine and the orientation transform that :func:`from_ras` undoes.
    """
    ornt = ras_orientation(affine)
    ras_affine = np.asarray(affine, np.float64) @ nio.inv_ornt_aff(ornt, data.shape)
    return nio.apply_orientation(data, ornt), ras_affine, ornt


def from_ras(data: FloatArray, ornt: npt.NDArray[np.float64]) -> FloatArray:
    """Undo :func:`to_ras` (the inverse MONAI's ``Invertd`` applies last)."""
    identity = np.column_stack([np.arange(len(ornt)), np.ones(len(ornt))])
    # the orientation that takes the RAS axes back to the file axes
    back = nio.ornt_transform(identity, ornt)
    return nio.apply_orientation(data, back)


# --- Spacingd(pixdim, mode="bilinear") --------------------------------------------------------


def zoom_affine(affine: FloatArray, pixdim: Sequence[float]) -> npt.NDArray[np.float64]:
    """The affine with the rotation of ``affine`` and voxel size ``pixdim``, no translation.

    ``monai.data.utils.zoom_affine(diagonal=False)``: the rotation comes from a Cholesky
    factorisation of the direction-and-zoom matrix, so any shear is dropped and no axis is
    flipped or swapped.
    """
    rzs = np.asarray(affine, np.float64)[:3, :3]
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    rotation = rzs @ np.linalg.inv(zs)
    scale = np.sign(np.diag(zs)) * np.abs(np.asarray(pixdim, np.float64))
    out = np.eye(4)
    out[:3, :3] = rotation @ np.diag(scale)
    return out


def target_grid(
    shape: Sequence[int], affine: FloatArray, pixdim: Sequence[float]
) -> tuple[tuple[int, int, int], npt.NDArray[np.float64]]:
    """Shape and affine of the grid ``Spacingd(pixdim)`` resamples a volume onto.

    As ``monai.transforms.Spacing`` with ``scale_extent=False``: an axis already within
    :data:`AFFINE_TOL` mm of its target keeps its spacing; the new grid spans the centres
    of the first and last voxels (``monai.data.utils.compute_shape_offset``), its shape
    rounded half to even, and its origin is the corner voxel that is smallest along every
    new axis (else the two grids share their centre).
    """
    affine = np.asarray(affine, np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing[spacing == 0] = 1.0
    wanted = np.asarray(pixdim, np.float64)
    out_spacing = np.where(np.abs(spacing - wanted) <= AFFINE_TOL, spacing, wanted)
    new_affine = zoom_affine(affine, out_spacing)

    dims = np.asarray(shape, dtype=float)
    corners = np.asarray(np.meshgrid(*[(0.0, d - 1.0) for d in dims], indexing="ij")).reshape(3, -1)
    corners = np.concatenate([corners, np.ones_like(corners[:1])])
    corners_out = np.linalg.solve(new_affine, affine) @ corners
    corners_world = affine @ corners
    distances = corners_out[:-1].copy()
    corners_out = corners_out[:-1] / corners_out[-1]
    out_shape = np.round(np.ptp(corners_out, axis=1) + 1.0)
    offset = None
    for i in range(corners_world.shape[1]):
        smallest = np.min(distances - distances[:, i : i + 1], axis=1)
        if np.allclose(smallest, 0.0, rtol=AFFINE_TOL):
            offset = corners_world[:-1, i]
            break
    if offset is None:  # no corner is first along every axis: align the centres
        offset = (
            affine[:3, :3] @ (dims / 2.0) + affine[:3, 3] - new_affine[:3, :3] @ (out_shape / 2.0)
        )
    new_affine[:3, 3] = offset
    size = tuple(int(n) for n in out_shape)
    return (size[0], size[1], size[2]), new_affine


def resample_linear(
    data: FloatArray,
    src_affine: FloatArray,
    dst_affine: FloatArray,
    dst_shape: Sequence[int],
    chunk_voxels: int = 1 << 21,
) -> npt.NDArray[np.float32]:
    """Trilinear resampling of ``data`` onto the grid ``(dst_shape, dst_affine)``.

    What ``monai.transforms.SpatialResample`` does for ``mode="bilinear"``,
    ``padding_mode="border"``, ``align_corners=False`` and ``dtype=float64`` (``Spacingd``'s
    defaults, and its inverse in ``Invertd``): destination voxel index ``d`` samples the
    source at index ``inv(src_affine) @ dst_affine @ d`` (MONAI's ``AffineTransform``
    normalises and denormalises that same map for ``grid_sample``), coordinates outside the
    volume are clamped to its edge voxels, and arithmetic is in float64 with a float32 result.
    A transform within :data:`AFFINE_TOL` of the identity onto the same shape is skipped,
    as MONAI skips it.
    """
    src_affine = np.asarray(src_affine, np.float64)
    dst_affine = np.asarray(dst_affine, np.float64)
    dst_shape = tuple(int(n) for n in dst_shape)
    xform = np.linalg.solve(src_affine, dst_affine)
    same_size = dst_shape == tuple(data.shape)
    if same_size and (
        np.allclose(src_affine, dst_affine, atol=AFFINE_TOL)
        or np.allclose(xform, np.eye(4), atol=AFFINE_TOL)
    ):
        return np.asarray(data, dtype=np.float32).copy()

    source = np.asarray(data, dtype=np.float64)
    upper = np.asarray(source.shape, np.float64)[:, None] - 1.0
    out = np.empty(dst_shape, dtype=np.float32)
    plane = dst_shape[1] * dst_shape[2]
    step = max(1, chunk_voxels // max(plane, 1))
    jj, kk = np.meshgrid(
        np.arange(dst_shape[1], dtype=np.float64),
        np.arange(dst_shape[2], dtype=np.float64),
        indexing="ij",
    )
    for start in range(0, dst_shape[0], step):  # in slabs: coordinates are 24 bytes a voxel
        stop = min(start + step, dst_shape[0])
        ii = np.arange(start, stop, dtype=np.float64)[:, None, None]
        index = np.stack(
            [
                np.broadcast_to(ii, (stop - start, *jj.shape)),
                np.broadcast_to(jj, (stop - start, *jj.shape)),
                np.broadcast_to(kk, (stop - start, *jj.shape)),
            ]
        ).reshape(3, -1)
        coords = xform[:3, :3] @ index + xform[:3, 3:]
        np.clip(coords, 0.0, upper, out=coords)  # padding_mode="border"
        values = ndimage.map_coordinates(source, coords, order=1, mode="nearest", prefilter=False)
        out[start:stop] = values.reshape(stop - start, *jj.shape)
    return out


# --- NormalizeIntensityd(nonzero=True, channel_wise=True) ------------------------------------


def nonzero_zscore(data: FloatArray) -> npt.NDArray[np.float32]:
    """Z-score over the non-zero voxels only; zero voxels stay zero.

    ``monai.transforms.NormalizeIntensity(nonzero=True)``: mean and population standard
    deviation (``unbiased=False``) of the voxels that are not exactly 0, a standard deviation
    of 0 read as 1, and an all-zero volume returned unchanged.
    """
    out = np.asarray(data, dtype=np.float32).copy()
    inside = out != 0
    if not inside.any():
        return out
    values = out[inside].astype(np.float64)
    mean, std = float(values.mean()), float(values.std())
    out[inside] = ((values - mean) / (std if std != 0.0 else 1.0)).astype(np.float32)
    return out


# --- CropForegroundd(select_fn=x > 0, margin) -------------------------------------------------


def foreground_box(data: FloatArray, margin: int) -> Box:
    """Start and stop of the box around the voxels above 0, widened by ``margin``.

    ``monai.transforms.utils.generate_spatial_bounding_box`` with ``CropForegroundd``'s
    ``select_fn=is_positive`` (so after the z-score: voxels brighter than the mean) and
    ``allow_smaller=False`` (MONAI 1.5's default): the box may reach past the volume, and
    :func:`crop_box` pads that part with zeros. An image with no voxel above 0 gives an
    empty box, as in MONAI.
    """
    positive = np.asarray(data) > 0
    start, stop = [0, 0, 0], [0, 0, 0]
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(positive.any(axis=others))
        if hits.size == 0:
            return (0, 0, 0), (0, 0, 0)
        start[axis] = int(hits[0]) - margin
        stop[axis] = int(hits[-1]) + margin + 1
    return (start[0], start[1], start[2]), (stop[0], stop[1], stop[2])


def crop_box(data: FloatArray, box: Box, value: float = 0.0) -> FloatArray:
    """The part of ``data`` inside ``box``; where the box reaches past the volume, ``value``
    (``CropForeground``'s crop then constant pad)."""
    start, stop = box
    out = np.full([b - a for a, b in zip(start, stop, strict=True)], value, dtype=data.dtype)
    src, dst = _overlap(data.shape, box)
    out[dst] = data[src]
    return out


def paste_box(
    block: FloatArray, box: Box, shape: Sequence[int], value: float = 0.0
) -> npt.NDArray[np.float32]:
    """The inverse of :func:`crop_box`: ``block`` put back at ``box`` in a volume of
    ``shape`` filled with ``value`` (``Invertd`` pads the cropped-away border with zeros)."""
    out = np.full(tuple(shape), value, dtype=np.float32)
    src, dst = _overlap(shape, box)
    out[src] = block[dst]
    return out


def _overlap(shape: Sequence[int], box: Box) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of the volume and of the box that cover their common part."""
    start, stop = box
    lows = [max(a, 0) for a in start]
    highs = [min(b, n) for b, n in zip(stop, shape, strict=True)]
    highs = [max(h, lo) for h, lo in zip(highs, lows, strict=True)]
    volume = tuple(slice(lo, hi) for lo, hi in zip(lows, highs, strict=True))
    inside = tuple(slice(lo - a, hi - a) for lo, hi, a in zip(lows, highs, start, strict=True))
    return volume, inside


# --- sliding_window_inference(roi, overlap, mode="gaussian") ---------------------------------


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """First index of each window along one axis of ``size`` voxels (``size >= roi``).

    ``monai.data.utils.dense_patch_slices`` with ``_get_scan_interval``: a step of
    ``int(roi * (1 - overlap))`` (the whole ROI when it equals the size), as many windows
    as it takes to reach the end, the last one moved back to end on the volume's edge.
    """
    step = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    count = math.ceil(size / step)
    needed = next((d for d in range(count) if d * step + roi >= size), None)
    count = needed + 1 if needed is not None else 1
    return [i * step - max(i * step + roi - size, 0) for i in range(count)]


def gaussian_importance(roi: Sequence[int], sigma_scale: float = 0.125) -> npt.NDArray[np.float32]:
    """The blending weight of a window's voxels (``compute_importance_map(mode="gaussian")``).

    A separable Gaussian centred on the window with sigma ``sigma_scale * roi`` per axis,
    computed in float32 like MONAI, and clamped below at ``max(min, 1e-3)`` so that the
    corners still count.
    """
    weights = np.ones((), dtype=np.float32)
    for size in roi:
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        sigma = np.float32(size * sigma_scale)
        gauss = np.exp(x**2 / (np.float32(-2.0) * sigma**2)).astype(np.float32)
        weights = np.multiply.outer(weights, gauss).astype(np.float32)
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def sliding_window(
    data: FloatArray,
    roi: Sequence[int],
    predict: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    overlap: float = 0.5,
    sigma_scale: float = 0.125,
    progress: Callable[[int, int], None] | None = None,
) -> npt.NDArray[np.float32]:
    """Run ``predict`` on overlapping ``roi`` windows and blend them with Gaussian weights.

    ``monai.inferers.sliding_window_inference(sw_batch_size=1, mode="gaussian")``: a volume
    smaller than the ROI is first zero-padded (half before, the rest after) and the padding
    removed from the result; each voxel's output is the weighted mean of the windows over
    it. ``predict`` maps one float32 window of shape ``roi`` to logits of the same shape;
    ``progress(done, total)`` is called after every window.
    """
    roi = tuple(int(r) for r in roi)
    pads = [
        (max(r - n, 0) // 2, max(r - n, 0) - max(r - n, 0) // 2)
        for r, n in zip(roi, data.shape, strict=True)
    ]
    padded = np.pad(np.asarray(data, np.float32), pads) if any(sum(p) for p in pads) else data
    padded = np.asarray(padded, dtype=np.float32)
    starts = [window_starts(n, r, overlap) for n, r in zip(padded.shape, roi, strict=True)]
    weights = gaussian_importance(roi, sigma_scale)
    total = np.zeros(padded.shape, dtype=np.float32)
    count = np.zeros(padded.shape, dtype=np.float32)
    corners = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    for done, corner in enumerate(corners, start=1):
        where = tuple(slice(s, s + r) for s, r in zip(corner, roi, strict=True))
        logits = np.asarray(predict(np.ascontiguousarray(padded[where])), dtype=np.float32)
        if logits.shape != roi:
            raise ValueError(f"the model returned a window of shape {logits.shape}, not {roi}")
        total[where] += logits * weights
        count[where] += weights
        if progress is not None:
            progress(done, len(corners))
    out = total / count
    keep = tuple(slice(a, a + n) for (a, _), n in zip(pads, data.shape, strict=True))
    return np.ascontiguousarray(out[keep])


def window_count(shape: Sequence[int], roi: Sequence[int], overlap: float = 0.5) -> int:
    """How many windows :func:`sliding_window` runs on a volume of ``shape``."""
    return math.prod(
        len(window_starts(max(n, r), r, overlap)) for n, r in zip(shape, roi, strict=True)
    )


# --- the mask ---------------------------------------------------------------------------------


def largest_component(mask: npt.NDArray[np.generic]) -> tuple[npt.NDArray[np.uint8], int]:
    """The largest 26-connected component of ``mask`` and how many components it had
    (TAPS's ``_largest_component``; the first of equal-sized components wins)."""
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3, 3)))
    if count <= 1:
        return (labels > 0).astype(np.uint8), int(count)
    sizes = np.bincount(labels.ravel())[1:]
    return (labels == int(np.argmax(sizes)) + 1).astype(np.uint8), int(count)
