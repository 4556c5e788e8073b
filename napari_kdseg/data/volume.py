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

from napari_kdseg.data.errors import VolumeError


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


def integer_labels(where: str | Path, data: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Label voxels as integers; masks stored as floats (common after resampling) must be whole."""
    if not np.issubdtype(data.dtype, np.floating):
        return data
    if not np.all(np.isfinite(data)):
        raise VolumeError(where, "label map contains NaN or infinite values")
    rounded = np.rint(data)
    if np.max(np.abs(data - rounded), initial=0.0) > 1e-3:
        raise VolumeError(where, "label map holds fractional values; expected integer labels")
    return rounded.astype(np.int32)
