"""DICOM series folders: find the series, order slices along their normal, build the affine.

File names and InstanceNumber are not trusted for order: slices are sorted by the projection
of ImagePositionPatient on the slice normal (the cross product of the ImageOrientationPatient
cosines), which is right for oblique stacks too. A series whose slices disagree on
orientation, matrix or pixel spacing is refused, and so is one with a gap in its positions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.errors import InvalidDicomError

from napari_kdseg.data.errors import DicomSeriesError
from napari_kdseg.data.volume import Volume, affine_from_lps

# Without these a file is not a slice of a 3D image series.
_REQUIRED_TAGS = ("PixelData", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
# A gap wider than this many median slice steps means a missing slice.
_GAP_TOLERANCE = 1.5


@dataclass(frozen=True)
class SeriesSummary:
    """What a folder's series look like, so a user can pick one."""

    uid: str
    number: int | None
    description: str
    files: int

    def __str__(self) -> str:
        return f"#{self.number} '{self.description}' ({self.files} files, uid {self.uid})"


def list_series(folder: str | Path) -> list[SeriesSummary]:
    """Every image series in ``folder`` (searched recursively), largest first."""
    groups = _group_by_series(Path(folder))
    summaries = [
        SeriesSummary(
            uid=uid,
            number=_int_or_none(headers[0][1].get("SeriesNumber")),
            description=str(headers[0][1].get("SeriesDescription", "")),
            files=len(headers),
        )
        for uid, headers in groups.items()
    ]
    return sorted(summaries, key=lambda s: -s.files)


def read_dicom_series(folder: str | Path, series: str | int | None = None) -> Volume:
    """Read one series of ``folder`` as a float32 volume in LPS-derived RAS+ geometry.

    ``series`` picks by SeriesInstanceUID, SeriesNumber or SeriesDescription when the folder
    holds several; without it, a folder with several series is refused with their list.
    """
    folder = Path(folder)
    groups = _group_by_series(folder)
    if not groups:
        raise DicomSeriesError(folder, "no DICOM image files found")
    uid = _choose_series(folder, groups, series)
    headers = groups[uid]
    return _assemble(folder, uid, headers)


def _group_by_series(folder: Path) -> dict[str, list[tuple[Path, Any]]]:
    if not folder.is_dir():
        raise DicomSeriesError(folder, "not a folder")
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        header = _read_header(path)
        if header is None or not all(tag in header for tag in _REQUIRED_TAGS):
            continue  # DICOMDIR, reports, secondary captures without geometry, non-DICOM files
        groups[str(header.get("SeriesInstanceUID", "unknown"))].append((path, header))
    return dict(groups)


def _read_header(path: Path) -> Any | None:
    if not _is_dicom(path):
        return None
    try:
        return pydicom.dcmread(path, stop_before_pixels=False, defer_size="1 KB")
    except (InvalidDicomError, OSError, EOFError, AttributeError, ValueError):
        return None


def _is_dicom(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _choose_series(
    folder: Path, groups: dict[str, list[tuple[Path, Any]]], series: str | int | None
) -> str:
    if series is None:
        if len(groups) == 1:
            return next(iter(groups))
        listing = "; ".join(str(s) for s in list_series(folder))
        raise DicomSeriesError(
            folder,
            f"holds {len(groups)} series, choose one by number, description or uid: {listing}",
        )
    wanted = str(series)
    for uid, headers in groups.items():
        first = headers[0][1]
        candidates = {
            uid,
            str(first.get("SeriesNumber", "")),
            str(first.get("SeriesDescription", "")),
        }
        if wanted in candidates:
            return uid
    listing = "; ".join(str(s) for s in list_series(folder))
    raise DicomSeriesError(folder, f"no series matches {wanted!r}; found: {listing}")


def _assemble(folder: Path, uid: str, headers: list[tuple[Path, Any]]) -> Volume:
    first = headers[0][1]
    orientation = _float_array(first.ImageOrientationPatient, 6)
    spacing_rc = _float_array(first.PixelSpacing, 2)
    shape = (int(first.Rows), int(first.Columns))
    for path, header in headers[1:]:
        if not np.allclose(_float_array(header.ImageOrientationPatient, 6), orientation, atol=1e-4):
            raise DicomSeriesError(
                path, f"series {uid} mixes slice orientations (this file differs from the first)"
            )
        if (int(header.Rows), int(header.Columns)) != shape:
            raise DicomSeriesError(
                path,
                f"series {uid} mixes matrix sizes {shape} and "
                f"{(int(header.Rows), int(header.Columns))}",
            )
        if not np.allclose(_float_array(header.PixelSpacing, 2), spacing_rc, atol=1e-4):
            raise DicomSeriesError(path, f"series {uid} mixes pixel spacings")

    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    positions = np.array([_float_array(h.ImagePositionPatient, 3) for _, h in headers])
    along_normal = positions @ normal
    order = np.argsort(along_normal, kind="stable")
    headers = [headers[i] for i in order]
    positions, along_normal = positions[order], along_normal[order]
    _check_slice_steps(folder, uid, headers, along_normal)

    slices = [_pixels(path, header) for path, header in headers]
    array = np.stack(slices).astype(np.float32)

    # Slice axis vector from the real first-to-last displacement (exact for gantry tilt too).
    if len(headers) > 1:
        slice_vector = (positions[-1] - positions[0]) / (len(headers) - 1)
    else:
        thickness = float(first.get("SliceThickness", 1.0) or 1.0)
        slice_vector = normal * thickness
    slice_step = float(np.linalg.norm(slice_vector))
    direction = np.column_stack([row_cosine, column_cosine, slice_vector / slice_step])
    # PixelSpacing is (between rows, between columns); column index i moves along row_cosine.
    spacing_xyz = (spacing_rc[1], spacing_rc[0], slice_step)
    affine = affine_from_lps(direction, spacing_xyz, positions[0])
    metadata = {
        "format": "dicom",
        "series_uid": uid,
        "series_number": _int_or_none(first.get("SeriesNumber")),
        "series_description": str(first.get("SeriesDescription", "")),
        "manufacturer": str(first.get("Manufacturer", "")),
        "field_strength": _float_or_none(first.get("MagneticFieldStrength")),
        "slice_thickness": _float_or_none(first.get("SliceThickness")),
        "files": [str(path) for path, _ in headers],
    }
    return Volume(array=array, affine=affine, source=folder, metadata=metadata)


def _check_slice_steps(
    folder: Path, uid: str, headers: list[tuple[Path, Any]], along_normal: npt.NDArray[np.float64]
) -> None:
    if len(along_normal) < 2:
        return
    steps = np.diff(along_normal)
    duplicates = np.flatnonzero(steps < 1e-3)
    if duplicates.size:
        i = int(duplicates[0])
        raise DicomSeriesError(
            folder,
            f"series {uid} has two slices at position {along_normal[i]:.2f} mm "
            f"({headers[i][0].name}, {headers[i + 1][0].name}): "
            "several echoes or repeated acquisitions mixed in one series",
        )
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > _GAP_TOLERANCE * median)
    if gaps.size:
        i = int(gaps[0])
        missing = round(steps[i] / median) - 1
        raise DicomSeriesError(
            folder,
            f"series {uid} is missing {missing} slice(s) between {headers[i][0].name} "
            f"({along_normal[i]:.2f} mm) and {headers[i + 1][0].name} "
            f"({along_normal[i + 1]:.2f} mm); slice step is {median:.2f} mm",
        )


def _pixels(path: Path, header: Any) -> npt.NDArray[np.float32]:
    try:
        pixels = header.pixel_array.astype(np.float32)
    except Exception as error:  # pydicom raises many types for missing codecs / bad data
        raise DicomSeriesError(path, f"pixel data cannot be decoded ({error})") from error
    if pixels.ndim != 2:
        raise DicomSeriesError(path, f"expected one 2D frame per file, found shape {pixels.shape}")
    slope = float(header.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(header.get("RescaleIntercept", 0.0) or 0.0)
    return pixels * slope + intercept


def _float_array(value: Any, length: int) -> npt.NDArray[np.float64]:
    array = np.asarray([float(v) for v in value], dtype=np.float64)
    if array.shape != (length,):
        raise ValueError(f"expected {length} numbers, found {array.shape}")
    return array


def _int_or_none(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value in (None, "") else float(value)
