"""NIfTI-1/2 reading and writing with nibabel.

Damaged files are refused with what is wrong: a ``.nii.gz`` is decompressed whole and its
gzip checksum verified before any voxel is used (nibabel alone reads only the bytes it needs
and so never sees a corrupt stream's checksum, and would return garbage voxels), and a file
shorter than its header says is called truncated. :func:`read_nifti_header` stays cheap: it
compares the gzip trailer's length (or the file size) with the header's and only decompresses
to confirm a mismatch, so it finds truncation, not corruption inside the stream.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from napari_kdseg.core.atomic import atomic_path
from napari_kdseg.core.errors import VolumeError
from napari_kdseg.data.layout import is_nifti
from napari_kdseg.data.memory import check_fits_in_memory
from napari_kdseg.data.volume import Volume, check_finite_scan, integer_labels, volume_shape

_CHUNK = 1 << 22


def read_nifti_header(path: str | Path) -> tuple[tuple[int, ...], npt.NDArray[np.float64]]:
    """Shape (file order) and affine without decoding the voxels; refuses truncated files."""
    shape, affine, _ = nifti_geometry(path)
    return shape, affine


def nifti_geometry(path: str | Path) -> tuple[tuple[int, ...], npt.NDArray[np.float64], int]:
    """:func:`read_nifti_header` and the bytes per stored voxel."""
    path = Path(path)
    image = _load(path)
    _check_length(path, image)
    shape = tuple(int(n) for n in image.shape)
    return shape, np.asarray(image.affine, dtype=np.float64), image.get_data_dtype().itemsize


def read_nifti(path: str | Path, *, labels: bool = False, volume: int | None = None) -> Volume:
    """Read a 3D NIfTI volume; ``labels=True`` keeps integer voxels instead of float32.

    A 4D file whose fourth axis has length one is squeezed. Any other 4D file (a time series,
    diffusion directions, several channels) is refused naming its shape and the choice to
    make, unless ``volume`` picks one of its volumes (0-based). Files of 2 or 5+ dimensions
    are refused with their shape. The memory the voxels need is checked against the memory
    available before they are decoded (:func:`~napari_kdseg.data.memory.check_fits_in_memory`).
    Scans with NaN or infinite voxels are refused with their count
    (:func:`~napari_kdseg.data.volume.check_finite_scan`); label maps are checked by
    :func:`~napari_kdseg.data.volume.integer_labels`.
    """
    path = Path(path)
    image = _load(path)
    shape = volume_shape(path, tuple(int(n) for n in image.shape), volume)
    stored = image.get_data_dtype()
    if stored.fields is not None or np.issubdtype(stored, np.complexfloating):
        raise VolumeError(
            path, f"voxel type {stored} (colour or complex) is not a grey-level scan or mask"
        )
    check_fits_in_memory(path, shape, stored.itemsize, "label map" if labels else "scan")
    image = _verified(path, image)
    try:
        proxy = image.dataobj if len(image.shape) == 3 else image.dataobj[..., volume or 0]
        if labels:
            data = integer_labels(path, np.asanyarray(proxy).reshape(shape))
        else:
            data = np.asarray(proxy, dtype=np.float32).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise VolumeError(path, f"voxel data cannot be decoded ({error})") from error
    if not labels:
        check_finite_scan(path, data)
    header: Any = image.header
    metadata: dict[str, Any] = {
        "format": "nifti",
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
    }
    if len(image.shape) == 4:
        metadata["volume"] = volume or 0
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
    if path.is_dir():
        raise VolumeError(path, "is a folder, not a NIfTI file")
    try:
        return nib.load(path)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as error:
        raise VolumeError(path, f"not a readable NIfTI file ({error})") from error


def _expected_length(image: Any) -> int:
    """Bytes the header says the file holds (uncompressed): header, extensions, voxels."""
    return int(image.dataobj.offset) + math.prod(image.shape) * image.get_data_dtype().itemsize


def _is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _check_length(path: Path, image: Any) -> None:
    """Refuse a file shorter than its header says, cheaply (see the module docstring)."""
    expected = _expected_length(image)
    try:
        if not _is_gzip(path):
            size = path.stat().st_size
            if size < expected:
                raise VolumeError(path, _truncated(size, expected))
            return
        with path.open("rb") as handle:
            handle.seek(-4, 2)
            (trailer,) = struct.unpack("<I", handle.read(4))
    except OSError as error:
        raise VolumeError(path, f"cannot be read ({error.strerror or error})") from error
    if trailer == expected % (1 << 32):
        return
    length = 0  # the trailer disagrees: decompress to tell truncation from trailing bytes
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                length += len(chunk)
                if length >= expected:
                    return
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeError(path, _corrupt(error, expected)) from error
    raise VolumeError(path, _truncated(length, expected))


def _verified(path: Path, image: Any) -> Any:
    """``image`` with its voxels backed by checked bytes: a ``.nii.gz`` is decompressed whole
    here, which verifies its CRC and length, and a plain file's length is checked."""
    if not _is_gzip(path):
        _check_length(path, image)
        return image
    expected = _expected_length(image)
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeError(path, _corrupt(error, expected)) from error
    if len(raw) < expected:
        raise VolumeError(path, _truncated(len(raw), expected))
    try:
        return type(image).from_bytes(raw)
    except (nib.filebasedimages.ImageFileError, ValueError) as error:
        raise VolumeError(path, f"not a readable NIfTI file ({error})") from error


def _truncated(length: int, expected: int) -> str:
    return (
        f"file is truncated: it holds {length} bytes (uncompressed) where its header "
        f"describes {expected}; copy or download it again"
    )


def _corrupt(error: BaseException, expected: int) -> str:
    detail = str(error) or type(error).__name__
    return (
        f"gzip data is truncated or corrupt ({detail}); the header describes {expected} bytes "
        "uncompressed; copy or download the file again"
    )
