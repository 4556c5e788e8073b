"""napari writer: a labels layer to NIfTI in the geometry of the scan it was drawn on.

The reader (and the segmentation panel) store the scan's affine and shape in the layer's
``metadata['kdseg']``; the mask is written with that affine, so it lies exactly on the scan in
any other tool. A layer without that metadata is written with an affine built from its
``scale`` and ``translate``. The file is written under a temporary name and renamed, so a
failure never leaves half a file. Imports no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_kdseg.data import io
from napari_kdseg.data.layout import is_nifti
from napari_kdseg.data.volume import Volume

#: Relative tolerance between the layer's scale and the stored affine's voxel size.
_SPACING_TOLERANCE = 1e-3


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer (``data``, napari's layer attributes ``meta``) to ``path``.

    Raises ValueError when the data does not fit the stored scan geometry (other shape, other
    voxel size) or is not a 3D map of labels 0..255.
    """
    target = nifti_path(path)
    labels = labels_array(data)
    affine = stored_affine(meta)
    if affine is None:
        affine = affine_from_scale(meta.get("scale"), meta.get("translate"), labels.ndim)
    else:
        check_geometry(labels, affine, meta)
    io.write_labels(labels, Volume(array=labels, affine=affine), target)
    return [str(target)]


def nifti_path(path: str | Path) -> Path:
    """``path``, with ``.nii.gz`` appended when it does not already end in a NIfTI suffix."""
    path = Path(path)
    if is_nifti(path):
        return path
    return path.with_name(path.name + ".nii.gz")


def labels_array(data: Any) -> npt.NDArray[np.uint8]:
    """The layer data as a 3D uint8 array, or a ValueError saying why it cannot be."""
    if isinstance(data, list | tuple):  # a multiscale pyramid: level 0 is full resolution
        data = data[0]
    array = np.asarray(data)
    if array.ndim != 3:
        raise ValueError(
            f"only 3D label maps can be saved as NIfTI here, this layer is {array.ndim}D "
            f"{array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"labels must be integers, this layer holds {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"labels must lie in 0..255 to be stored as uint8; found {array.min()}..{array.max()}"
        )
    return array.astype(np.uint8, copy=False)


def stored_affine(meta: dict[str, Any]) -> npt.NDArray[np.float64] | None:
    """The scan affine the reader stored in ``meta['metadata']['kdseg']``, if any."""
    geometry = _geometry(meta)
    if geometry.get("affine") is None:
        return None
    affine = np.asarray(geometry["affine"], dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"the layer's stored affine is not 4x4: {affine.shape}")
    return affine


def check_geometry(
    labels: npt.NDArray[np.uint8], affine: npt.NDArray[np.float64], meta: dict[str, Any]
) -> None:
    """Refuse labels that are not on the stored scan grid (shape, or voxel size vs ``scale``)."""
    geometry = _geometry(meta)
    expected = geometry.get("shape") or _source_shape(geometry.get("source"))
    if expected is not None and tuple(int(n) for n in expected) != labels.shape:
        raise ValueError(
            f"this labels layer has shape {labels.shape} but the scan it belongs to "
            f"({geometry.get('source') or 'stored geometry'}) has shape {tuple(expected)}; "
            "it cannot be written in the scan's geometry"
        )
    scale = meta.get("scale")
    if scale is not None and len(scale) == 3:
        sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[::-1]  # array order (k, j, i)
        if not np.allclose(np.asarray(scale, dtype=float), sizes, rtol=_SPACING_TOLERANCE):
            raise ValueError(
                f"this labels layer's scale {tuple(float(s) for s in scale)} differs from the "
                f"voxel size {tuple(round(float(s), 4) for s in sizes)} of the scan it belongs "
                "to; it cannot be written in the scan's geometry"
            )


def affine_from_scale(
    scale: Sequence[float] | None, translate: Sequence[float] | None, ndim: int = 3
) -> npt.NDArray[np.float64]:
    """A RAS affine with the layer's ``scale`` and ``translate`` (array order ``k, j, i``)."""
    scale = np.ones(ndim) if scale is None else np.asarray(scale, dtype=np.float64)
    translate = np.zeros(ndim) if translate is None else np.asarray(translate, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(scale[-3:][::-1])  # file axes i, j, k are array axes 2, 1, 0
    affine[:3, 3] = translate[-3:][::-1]
    return affine


def _geometry(meta: dict[str, Any]) -> dict[str, Any]:
    metadata = meta.get("metadata") or {}
    geometry = metadata.get("kdseg") if isinstance(metadata, dict) else None
    return geometry if isinstance(geometry, dict) else {}


def _source_shape(source: str | None) -> tuple[int, ...] | None:
    """The array shape of the source scan from its header, when the file is still there."""
    if not source or not Path(source).is_file():
        return None
    try:
        return io.read_header(source).shape
    except Exception:  # the check is a safeguard; an unreadable source does not block saving
        return None
