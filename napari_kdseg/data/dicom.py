"""DICOM series folders: find the series, order slices along their normal, build the affine.

File names and InstanceNumber are not trusted for order: slices are sorted by the projection
of ImagePositionPatient on the slice normal (the cross product of the ImageOrientationPatient
cosines), which is right for oblique stacks too. A series whose slices disagree on
orientation, matrix or pixel spacing is refused, and so is one with a gap in its positions,
one with a slice without pixel data, and a folder that is empty, cannot be read or holds no
image series: each message says what the folder held instead (files that are not DICOM,
DICOM files without pixel data or image geometry, files that cannot be read).
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.errors import InvalidDicomError

from napari_kdseg.core.errors import DicomSeriesError
from napari_kdseg.data.layout import looks_like_dicom
from napari_kdseg.data.memory import check_fits_in_memory
from napari_kdseg.data.volume import Volume, affine_from_lps, check_finite_scan

# Without these a file is not a slice of a 3D image series (DICOMDIR, reports, captures).
_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
# A gap wider than this many median slice steps means a missing slice.
_GAP_TOLERANCE = 1.5


@dataclass
class _Scan:
    """What a folder holds: image series by uid, and the files that are not usable slices."""

    groups: dict[str, list[tuple[Path, Any]]] = field(default_factory=dict)
    files: int = 0
    not_dicom: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    no_geometry: list[Path] = field(default_factory=list)
    no_pixels: list[tuple[Path, str]] = field(default_factory=list)  # (file, series uid)

    def summary(self) -> str:
        """What was found instead of image series, e.g. for an error message."""
        parts = []
        if self.not_dicom:
            parts.append(f"{len(self.not_dicom)} file(s) not DICOM (e.g. {self.not_dicom[0].name})")
        if self.unreadable:
            path, why = self.unreadable[0]
            parts.append(f"{len(self.unreadable)} unreadable (e.g. {path.name}: {why})")
        if self.no_pixels:
            parts.append(
                f"{len(self.no_pixels)} DICOM file(s) without pixel data "
                f"(e.g. {self.no_pixels[0][0].name})"
            )
        if self.no_geometry:
            parts.append(
                f"{len(self.no_geometry)} DICOM file(s) without image position/orientation "
                f"(e.g. {self.no_geometry[0].name}: a DICOMDIR, report or screen capture)"
            )
        return "; ".join(parts)


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
    groups = _scan_folder(Path(folder)).groups
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
    scan = _scan_folder(folder)
    if not scan.groups:
        if not scan.files:
            raise DicomSeriesError(
                folder, "folder is empty: expected a DICOM series (or a NIfTI/MetaImage file)"
            )
        raise DicomSeriesError(
            folder, f"no DICOM image files found among its {scan.files} file(s): {scan.summary()}"
        )
    uid = _choose_series(folder, scan.groups, series)
    lacking = [path for path, owner in scan.no_pixels if owner == uid]
    if lacking:
        raise DicomSeriesError(
            lacking[0],
            f"DICOM slice of series {uid} has no pixel data (no PixelData element); "
            f"{len(lacking)} of {len(lacking) + len(scan.groups[uid])} file(s) of the series "
            "lack it: export the series again",
        )
    return _assemble(folder, uid, scan.groups[uid], scan.unreadable)


def _scan_folder(folder: Path) -> _Scan:
    if not folder.is_dir():
        raise DicomSeriesError(folder, "not a folder")
    try:
        os.listdir(folder)
    except OSError as error:
        raise DicomSeriesError(
            folder, f"folder cannot be read ({error.strerror or error})"
        ) from error
    scan = _Scan()
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        scan.files += 1
        try:
            if not looks_like_dicom(path):
                scan.not_dicom.append(path)
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                header = pydicom.dcmread(path, stop_before_pixels=False, defer_size="1 KB")
        except OSError as error:
            scan.unreadable.append((path, error.strerror or str(error)))
            continue
        except Exception as error:  # pydicom raises many types for damaged files
            reason = "not a readable DICOM file" if isinstance(error, InvalidDicomError) else ""
            scan.unreadable.append((path, reason or f"{type(error).__name__}: {error}"))
            continue
        if not all(tag in header for tag in _GEOMETRY_TAGS):
            damage = _damage(header, caught)
            if damage:
                scan.unreadable.append((path, f"truncated or damaged DICOM file ({damage})"))
            else:
                scan.no_geometry.append(path)
            continue
        uid = str(header.get("SeriesInstanceUID", "unknown"))
        if "PixelData" not in header:
            scan.no_pixels.append((path, uid))
            continue
        groups[uid].append((path, header))
    scan.groups = dict(groups)
    return scan


def _damage(header: Any, caught: list[warnings.WarningMessage]) -> str | None:
    """Why a DICOM file without image geometry looks damaged rather than a non-image file.

    pydicom reads a truncated file leniently: it returns what it got, sometimes warning.
    An image storage object with neither geometry nor pixel data was cut short.
    """
    if caught:
        return str(caught[0].message)
    if len(header) == 0:
        return "no data elements"
    sop_class = getattr(header.get("SOPClassUID"), "name", "")
    if "Image Storage" in sop_class and "PixelData" not in header:
        return f"{sop_class} object without image position or pixel data"
    return None


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


def _assemble(
    folder: Path,
    uid: str,
    headers: list[tuple[Path, Any]],
    unreadable: list[tuple[Path, str]] | None = None,
) -> Volume:
    for path, header in headers:
        try:
            _float_array(header.ImageOrientationPatient, 6)
            _float_array(header.ImagePositionPatient, 3)
            _float_array(header.PixelSpacing, 2)
            int(header.Rows), int(header.Columns)
        except (AttributeError, TypeError, ValueError) as error:
            raise DicomSeriesError(
                path, f"malformed image geometry in series {uid} ({error})"
            ) from error
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
    _check_slice_steps(folder, uid, headers, along_normal, unreadable or [])

    # float32 slices, then their stack: 8 bytes a voxel at the peak
    check_fits_in_memory(folder, (len(headers), *shape), 4, f"DICOM series {uid}")
    slices = [_pixels(path, header) for path, header in headers]
    array = np.stack(slices).astype(np.float32, copy=False)
    del slices
    check_finite_scan(folder, array)

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
    folder: Path,
    uid: str,
    headers: list[tuple[Path, Any]],
    along_normal: npt.NDArray[np.float64],
    unreadable: list[tuple[Path, str]],
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
            f"({along_normal[i + 1]:.2f} mm); slice step is {median:.2f} mm"
            + _unreadable_note(unreadable),
        )


def _unreadable_note(unreadable: list[tuple[Path, str]]) -> str:
    if not unreadable:
        return ""
    first, why = unreadable[0]
    if len(unreadable) == 1:
        return f"; {first.name} here cannot be read and may be the missing slice ({why})"
    names = ", ".join(path.name for path, _ in unreadable[:3])
    more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
    return (
        f"; {len(unreadable)} files here cannot be read and may be the missing slices: "
        f"{names}{more} ({first.name}: {why})"
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
