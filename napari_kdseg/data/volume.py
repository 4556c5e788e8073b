"""The one volume type every reader returns and every writer takes.

Axis order: ``array`` is indexed ``[k, j, i]`` (slice, row, column), i.e. the reverse of the
file's voxel index ``(i, j, k)``. Slices come first so a 2D network walks the first axis and
napari shows that axis on its slider. ``affine`` keeps nibabel's convention: it maps the
file-order voxel index ``(i, j, k, 1)`` to RAS+ world millimetres, so writing a result back
in the source geometry is ``array.T`` with the same ``affine``. ``spacing`` is in mm and in
array order ``(k, j, i)``, which is what napari's ``scale`` wants.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_kdseg.core.errors import VolumeError


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scan or label map with the geometry needed to write results back."""

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    source: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.source or "<in memory>"
        if self.array.ndim != 3:
            raise VolumeError(
                where, f"expected a 3D volume, found {self.array.ndim}D {self.array.shape}"
            )
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise VolumeError(where, f"affine must be a finite 4x4 matrix, got {affine.shape}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise VolumeError(where, "affine is singular (zero voxel size or collinear axes)")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(slices, rows, columns)``."""
        return self.array.shape  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm, in array order ``(slice, row, column)``."""
        sizes = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))  # per file axis i, j, k
        return float(sizes[2]), float(sizes[1]), float(sizes[0])

    @property
    def orientation(self) -> str:
        """nibabel axis codes of the file axes ``(i, j, k)``, e.g. ``"LPS"``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    @property
    def file_order_array(self) -> npt.NDArray[Any]:
        """The voxels in file order ``(i, j, k)``, ready for a NIfTI writer with ``affine``."""
        return np.ascontiguousarray(self.array.transpose(2, 1, 0))

    def with_array(self, array: npt.NDArray[Any], **metadata: Any) -> Volume:
        """A volume on the same grid holding other voxels (a mask, a probability map)."""
        if array.shape != self.array.shape:
            raise VolumeError(
                self.source or "<in memory>",
                f"new array shape {array.shape} differs from the volume's {self.array.shape}",
            )
        return replace(self, array=array, metadata={**self.metadata, **metadata})

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        """Whether ``other`` has this volume's shape and (to ``atol`` mm) its affine."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))


def affine_from_lps(
    direction: npt.ArrayLike, spacing_xyz: npt.ArrayLike, origin: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """RAS+ affine from ITK/DICOM geometry (LPS direction cosines as columns, spacing, origin)."""
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(spacing_xyz, dtype=np.float64)[None, :]
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def lps_geometry(
    affine: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Inverse of :func:`affine_from_lps`: ``(direction 3x3, spacing_xyz, origin)`` in LPS."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    return lps[:3, :3] / spacing[None, :], spacing, lps[:3, 3].copy()


def volume_shape_message(shape: tuple[int, ...]) -> str:
    """Why a shape is not a 3D volume, and what to do, for any reader."""
    if len(shape) == 2:
        return (
            f"expected a 3D volume (slices x rows x columns), found a single 2D image {shape}; "
            "segmentation needs the whole stack of slices in one file or DICOM folder"
        )
    if len(shape) == 4:
        last = shape[3] - 1
        return (
            f"expected a 3D volume, found 4D {shape}: {shape[3]} volumes along the 4th axis "
            f"(a time series or several channels); choose one with volume=0..{last} "
            f"(kdseg segment --volume N), or save that volume alone as a 3D file"
        )
    return f"expected a 3D volume, found {len(shape)}D {shape}"


def volume_shape(path: str | Path, shape: tuple[int, ...], volume: int | None) -> tuple[int, ...]:
    """The 3D shape (file order) read from a file of ``shape`` given the ``volume`` asked for
    (0-based, for 4D files), or a :class:`VolumeError` saying what was found instead."""
    if len(shape) == 4 and shape[3] == 1 and not volume:
        return shape[:3]
    if len(shape) == 4 and volume is not None:
        if not 0 <= volume < shape[3]:
            raise VolumeError(
                path, f"has {shape[3]} volumes {shape}; volume {volume} is not in 0..{shape[3] - 1}"
            )
        return shape[:3]
    if len(shape) != 3:
        raise VolumeError(path, volume_shape_message(shape))
    if volume:
        raise VolumeError(path, f"is a single 3D volume {shape}; there is no volume {volume}")
    return shape


#: More distinct values than this in a label map means it is not one (a scan given as a mask):
#: a prostate mask holds background, gland and perhaps a few zones.
MAX_LABEL_VALUES = 16


def integer_labels(where: str | Path, data: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Label voxels as integers, after checking they can be a label map at all.

    Masks stored as floats (common after resampling) must be finite and whole; every mask
    must be non-negative and hold at most :data:`MAX_LABEL_VALUES` distinct values (see
    :func:`check_label_values`).
    """
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise VolumeError(
                where, f"label map contains {bad} NaN or infinite value(s); expected integer labels"
            )
        rounded = np.rint(data)
        if np.max(np.abs(data - rounded), initial=0.0) > 1e-3:
            raise VolumeError(where, "label map holds fractional values; expected integer labels")
        data = rounded.astype(np.int32)
    elif data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif not np.issubdtype(data.dtype, np.integer):
        raise VolumeError(where, f"label map has data type {data.dtype}; expected integer labels")
    check_label_values(where, data)
    return data


def check_label_values(where: str | Path, data: npt.NDArray[np.integer]) -> None:
    """Refuse negative labels and label maps with more than :data:`MAX_LABEL_VALUES` values.

    A negative label would silently become background; dozens of distinct values mean an
    image was given where a mask was expected.
    """
    if data.size == 0:
        return
    low, high = int(data.min()), int(data.max())
    if low < 0:
        negative = int(np.count_nonzero(data < 0))
        raise VolumeError(
            where,
            f"label map holds {negative} voxel(s) with negative labels (down to {low}); "
            "expected 0 for background and positive integers for structures",
        )
    if high < MAX_LABEL_VALUES:
        return  # at most 0..high: few enough whatever the voxels hold
    if high < 1 << 20:
        distinct = int(np.count_nonzero(np.bincount(data.ravel().astype(np.intp, copy=False))))
    else:
        distinct = int(np.unique(data).size)
    if distinct > MAX_LABEL_VALUES:
        raise VolumeError(
            where,
            f"label map holds {distinct} distinct values ({low}..{high}); a mask holds at most "
            f"{MAX_LABEL_VALUES} (0 background, 1 prostate, perhaps zones): is this a scan "
            "rather than its mask?",
        )


def check_finite_scan(where: str | Path, data: npt.NDArray[np.floating]) -> None:
    """Refuse a scan holding NaN or infinite voxels, giving how many.

    They are refused rather than replaced: no replacement value is right for every scan
    (0 is not background after a bias-field correction, and NaN often marks voxels outside
    the field of view that the scanner never measured), and a silent change of a clinical
    image must not happen. The message says how to fix the file.
    """
    if not np.issubdtype(data.dtype, np.floating):
        return
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise VolumeError(
            where,
            f"scan holds {bad} NaN/Inf voxel(s) of {data.size} "
            f"({100 * bad / data.size:.3g} %); replace them (for example with the background "
            "intensity) and save the scan again: they are refused, not guessed",
        )


def grid_difference(
    shape: tuple[int, ...],
    affine: npt.NDArray[np.float64],
    other_shape: tuple[int, ...],
    other_affine: npt.NDArray[np.float64],
    atol: float = 1e-3,
) -> str | None:
    """How two voxel grids differ, in words (first vs second; shapes and spacings in array
    order: slices, rows, columns), or None if they agree to ``atol`` mm."""
    if tuple(shape) != tuple(other_shape):
        return f"shape {tuple(shape)} vs {tuple(other_shape)}"
    affine, other_affine = np.asarray(affine, np.float64), np.asarray(other_affine, np.float64)
    if np.allclose(affine, other_affine, atol=atol):
        return None
    parts = []
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[::-1]
    other_spacing = np.sqrt((other_affine[:3, :3] ** 2).sum(axis=0))[::-1]
    if not np.allclose(spacing, other_spacing, atol=atol):
        parts.append(
            f"spacing {tuple(round(float(s), 4) for s in spacing)} mm vs "
            f"{tuple(round(float(s), 4) for s in other_spacing)} mm"
        )
    directions = affine[:3, :3] / spacing[::-1]
    other_directions = other_affine[:3, :3] / other_spacing[::-1]
    if not np.allclose(directions, other_directions, atol=1e-4):
        import nibabel as nib

        codes = "".join(nib.aff2axcodes(affine))
        other_codes = "".join(nib.aff2axcodes(other_affine))
        parts.append(f"axis directions differ ({codes} vs {other_codes})")
    shift = float(np.linalg.norm(affine[:3, 3] - other_affine[:3, 3]))
    if shift > atol:
        parts.append(f"origin differs by {shift:.3g} mm")
    return "; ".join(parts) or "affines differ"


def check_mask_grid(
    mask_path: str | Path,
    mask_shape: tuple[int, ...],
    mask_affine: npt.NDArray[np.float64],
    image_path: str | Path,
    image_shape: tuple[int, ...],
    image_affine: npt.NDArray[np.float64],
    atol: float = 1e-3,
) -> None:
    """Refuse a mask that does not lie voxel for voxel on its image's grid, naming both."""
    difference = grid_difference(mask_shape, mask_affine, image_shape, image_affine, atol)
    if difference is not None:
        raise VolumeError(
            mask_path,
            f"mask does not lie on the grid of its image {image_path} (mask vs image: "
            f"{difference}); resample the mask onto the image",
        )
