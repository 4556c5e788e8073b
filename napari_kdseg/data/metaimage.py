"""MetaImage (.mhd header + .raw, or single-file .mha): PROMISE12's native format, via SimpleITK.

The header is read first, so a 2D, 4D or multi-component file is refused (or one volume of a
4D file extracted, with ``volume``) and a too-large one refused before its voxels are decoded.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_kdseg.core.errors import VolumeError
from napari_kdseg.data.layout import is_metaimage_header
from napari_kdseg.data.memory import check_fits_in_memory
from napari_kdseg.data.volume import (
    Volume,
    affine_from_lps,
    check_finite_scan,
    integer_labels,
    volume_shape,
    volume_shape_message,
)

_FIELD = re.compile(r"^\s*(?P<key>\w+)\s*=\s*(?P<value>.*?)\s*$", re.MULTILINE)


def read_metaimage_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape (file order) and RAS+ affine without decoding the voxels."""
    shape, affine, _ = metaimage_geometry(path)
    return shape, affine


def metaimage_geometry(path: str | Path) -> tuple[tuple[int, ...], np.ndarray, int]:
    """:func:`read_metaimage_header` and the bytes per stored voxel (all components)."""
    reader = _information(Path(path))
    size = tuple(int(n) for n in reader.GetSize())
    if len(size) != 3:
        raise VolumeError(path, volume_shape_message(size))
    affine = affine_from_lps(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin())
    itemsize = _itemsize(reader) * int(reader.GetNumberOfComponents())
    _check_data_file(Path(path), math.prod(size) * itemsize)
    return size, affine, itemsize


def _itemsize(reader: sitk.ImageFileReader) -> int:
    return int(sitk.Image([1, 1], reader.GetPixelID()).GetSizeOfPixelComponent())


def read_metaimage(path: str | Path, *, labels: bool = False, volume: int | None = None) -> Volume:
    """Read a 3D MetaImage; ``labels=True`` keeps integer voxels instead of float32.

    ``volume`` picks one volume of a 4D file (0-based); see
    :func:`~napari_kdseg.data.nifti.read_nifti` for what is refused and why.
    """
    path = Path(path)
    reader = _information(path)
    size = tuple(int(n) for n in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    if components != 1:
        raise VolumeError(
            path,
            f"expected a single-channel volume, found {components} components per voxel "
            f"(colour or vector image) of size {size}",
        )
    shape = volume_shape(path, size, volume)
    if len(size) == 4:
        reader.SetExtractSize([*shape, 0])
        reader.SetExtractIndex([0, 0, 0, volume or 0])
    check_fits_in_memory(path, shape, _itemsize(reader), "label map" if labels else "scan")
    _check_data_file(path, math.prod(size) * _itemsize(reader) * components)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise VolumeError(path, f"not a readable MetaImage ({_first_line(error)})") from error
    array = sitk.GetArrayFromImage(image)  # already (k, j, i)
    if labels:
        array = integer_labels(path, array)
    else:
        array = array.astype(np.float32, copy=False)
        check_finite_scan(path, array)
    affine = affine_from_lps(image.GetDirection(), image.GetSpacing(), image.GetOrigin())
    metadata: dict[str, object] = {"format": "metaimage"}
    if len(size) == 4:
        metadata["volume"] = volume or 0
    return Volume(
        array=np.ascontiguousarray(array),
        affine=affine,
        source=path,
        metadata=metadata,
    )


def _information(path: Path) -> sitk.ImageFileReader:
    if not path.exists():
        raise VolumeError(path, "file does not exist")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise VolumeError(path, f"not a readable MetaImage ({_first_line(error)})") from error
    return reader


def _check_data_file(path: Path, expected: int) -> None:
    """Refuse an ``.mhd`` whose uncompressed ``.raw`` file is missing or shorter than its
    header says (SimpleITK's own message for it is a misleading errno)."""
    if not is_metaimage_header(path):
        return
    try:
        fields = {m["key"]: m["value"] for m in _FIELD.finditer(path.read_text(errors="replace"))}
    except OSError as error:
        raise VolumeError(path, f"cannot be read ({error.strerror or error})") from error
    name = fields.get("ElementDataFile", "")
    if fields.get("CompressedData", "False").lower() == "true" or name.upper() in ("", "LOCAL"):
        return
    if name.upper() == "LIST" or "%" in name or " " in name:
        return  # one file per slice: SimpleITK checks those
    data = path.parent / name
    if not data.is_file():
        raise VolumeError(path, f"its voxel data file {data} does not exist")
    size = data.stat().st_size
    offset = int(fields.get("HeaderSize", "0") or 0)
    if size < expected + max(offset, 0):
        raise VolumeError(
            path,
            f"voxel data file {data.name} is truncated: it holds {size} bytes where the "
            f"header describes {expected + max(offset, 0)}; copy or download it again",
        )


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
