"""NIfTI-1/2 reading and writing with nibabel."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from napari_kdseg.data.atomic import atomic_path
from napari_kdseg.data.errors import VolumeError
from napari_kdseg.data.volume import Volume, integer_labels

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti_header(path: str | Path) -> tuple[tuple[int, ...], npt.NDArray[np.float64]]:
    """Shape (file order) and affine without decoding the voxels."""
    image = _load(Path(path))
    return tuple(int(n) for n in image.shape), np.asarray(image.affine, dtype=np.float64)


def read_nifti(path: str | Path, *, labels: bool = False) -> Volume:
    """Read a 3D NIfTI volume; ``labels=True`` keeps integer voxels instead of float32.

    A 4D file whose fourth axis has length one is squeezed; any other 4D file is refused,
    naming its shape, because a multi-channel or time series scan needs a choice of volume.
    """
    path = Path(path)
    image = _load(path)
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise VolumeError(path, f"expected a 3D volume, found {len(image.shape)}D {image.shape}")
    try:
        if labels:
            data = integer_labels(path, np.asanyarray(image.dataobj).reshape(shape))
        else:
            data = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise VolumeError(path, f"voxel data cannot be decoded ({error})") from error
    header: Any = image.header
    metadata = {
        "format": "nifti",
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
    }
    return Volume(
        array=np.ascontiguousarray(data.transpose(2, 1, 0)),
        affine=image.affine,
        source=path,
        metadata=metadata,
    )


def write_nifti(volume: Volume, path: str | Path, dtype: npt.DTypeLike | None = None) -> Path:
    """Write ``volume`` as NIfTI in its own geometry, atomically (temporary name, then rename).

    qform and sform both carry the affine (code 1, scanner) so nibabel, SimpleITK and ITK-SNAP
    agree on where every voxel is.
    """
    path = Path(path)
    if not is_nifti(path):
        raise VolumeError(path, "output name must end in .nii or .nii.gz")
    data = volume.file_order_array
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    image = nib.Nifti1Image(data, volume.affine)
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


def _load(path: Path) -> Any:
    if not path.exists():
        raise VolumeError(path, "file does not exist")
    try:
        return nib.load(path)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as error:
        raise VolumeError(path, f"not a readable NIfTI file ({error})") from error
