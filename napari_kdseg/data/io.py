"""One entry point to read any supported scan or mask, and to write label maps back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from napari_kdseg.core.errors import VolumeError
from napari_kdseg.data.dicom import read_dicom_series
from napari_kdseg.data.layout import is_metaimage, is_nifti
from napari_kdseg.data.metaimage import metaimage_geometry, read_metaimage
from napari_kdseg.data.nifti import nifti_geometry, read_nifti, write_nifti
from napari_kdseg.data.volume import Volume

SUPPORTED = "NIfTI (.nii, .nii.gz), MetaImage (.mhd, .mha) or a DICOM series folder"


@dataclass(frozen=True)
class Header:
    """Geometry read without decoding voxels: shape and spacing in array order (k, j, i).

    ``itemsize`` is the bytes of one stored voxel, for memory estimates.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: npt.NDArray[np.float64]
    itemsize: int = 4


def read_volume(
    path: str | Path,
    *,
    labels: bool = False,
    series: str | int | None = None,
    volume: int | None = None,
) -> Volume:
    """Read a scan (float32) or, with ``labels=True``, a label map (integers) from ``path``.

    ``series`` picks one series of a DICOM folder holding several, ``volume`` one volume
    (0-based) of a 4D NIfTI or MetaImage file. Whatever is wrong with the input is raised as
    a :class:`~napari_kdseg.core.errors.VolumeError` naming the file and the problem, before
    anything is written: unreadable, truncated or corrupt files, 2D or 4D volumes, scans
    with NaN/Inf voxels, label maps that cannot be masks, volumes too large for the memory
    available (checked from the header, before decoding) and DICOM folders that do not hold
    exactly one complete series.
    """
    path = Path(path)
    if path.is_dir():
        if volume:
            raise VolumeError(path, "volume= applies to 4D NIfTI or MetaImage files only")
        return read_dicom_series(path, series=series)
    if is_nifti(path):
        return read_nifti(path, labels=labels, volume=volume)
    if is_metaimage(path):
        return read_metaimage(path, labels=labels, volume=volume)
    if not path.exists():
        raise VolumeError(path, "file does not exist")
    raise VolumeError(path, f"unsupported file type; expected {SUPPORTED}")


def read_header(path: str | Path) -> Header:
    """Shape, spacing and affine of a NIfTI or MetaImage file without reading its voxels, or
    of a DICOM series folder (whose geometry comes from every slice's header, so the series
    is read whole: a few tenths of a second for a prostate T2 series).

    A file shorter than its header describes is refused as truncated (corruption inside a
    gzip stream is only found by :func:`read_volume`, which decompresses it).
    """
    path = Path(path)
    if path.is_dir():
        series = read_dicom_series(path)
        shape, affine, itemsize = series.shape[::-1], series.affine, series.array.itemsize
    elif is_nifti(path):
        shape, affine, itemsize = nifti_geometry(path)
    elif is_metaimage(path):
        shape, affine, itemsize = metaimage_geometry(path)
    elif not path.exists():
        raise VolumeError(path, "file does not exist")
    else:
        raise VolumeError(path, f"unsupported file type; expected {SUPPORTED}")
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(float(s) for s in sizes[::-1])
    return Header(
        shape=tuple(reversed(shape[:3])) + tuple(shape[3:]),
        spacing=spacing,
        affine=affine,
        itemsize=itemsize,
    )


def write_labels(labels: npt.NDArray[np.integer], reference: Volume, path: str | Path) -> Path:
    """Write a label map (array order ``(k, j, i)``) as NIfTI in ``reference``'s geometry."""
    labels = np.asarray(labels)
    if labels.shape != reference.shape:
        raise VolumeError(
            path, f"label map shape {labels.shape} does not match the scan's {reference.shape}"
        )
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise VolumeError(path, "label values must lie in 0..255 to be stored as uint8")
    mask = reference.with_array(labels.astype(np.uint8))
    return write_nifti(mask, path, dtype=np.uint8)
