"""MetaImage (.mhd header + .raw, or single-file .mha): PROMISE12's native format, via SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_kdseg.data.errors import VolumeError
from napari_kdseg.data.volume import Volume, affine_from_lps, integer_labels

METAIMAGE_SUFFIXES = (".mhd", ".mha")


def is_metaimage(path: str | Path) -> bool:
    return str(path).lower().endswith(METAIMAGE_SUFFIXES)


def read_metaimage_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape (file order) and RAS+ affine without decoding the voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise VolumeError(
            path, f"not a readable MetaImage header ({_first_line(error)})"
        ) from error
    size = tuple(int(n) for n in reader.GetSize())
    if len(size) != 3:
        raise VolumeError(path, f"expected a 3D volume, found {len(size)}D {size}")
    affine = affine_from_lps(reader.GetDirection(), reader.GetSpacing(), reader.GetOrigin())
    return size, affine


def read_metaimage(path: str | Path, *, labels: bool = False) -> Volume:
    """Read a 3D MetaImage; ``labels=True`` keeps integer voxels instead of float32."""
    path = Path(path)
    if not path.exists():
        raise VolumeError(path, "file does not exist")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise VolumeError(path, f"not a readable MetaImage ({_first_line(error)})") from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            path,
            f"expected a 3D single-channel volume, found {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)",
        )
    array = sitk.GetArrayFromImage(image)  # already (k, j, i)
    array = integer_labels(path, array) if labels else array.astype(np.float32)
    affine = affine_from_lps(image.GetDirection(), image.GetSpacing(), image.GetOrigin())
    return Volume(
        array=np.ascontiguousarray(array),
        affine=affine,
        source=path,
        metadata={"format": "metaimage"},
    )


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
