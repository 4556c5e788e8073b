"""File naming and folder layouts: the one place that knows what a scan, a mask or a DICOM
file is called.

- volume files end in a NIfTI (``.nii``, ``.nii.gz``) or MetaImage (``.mhd``, ``.mha``) suffix,
  in any capitalisation; a case is named by what precedes it (``Case00.nii.gz`` -> ``Case00``);
- a mask is named after its case with ``_segmentation`` in any capitalisation
  (``Case00_segmentation.nii.gz``, ``Case00_Segmentation.mhd``), as in SAML/MS-Net and PROMISE12;
- MSD / nnU-Net v2 sites keep scans in ``imagesTr/`` and masks in ``labelsTr/``; a scan's name
  may carry a four-digit channel (``prostate_00_0000.nii.gz``) and channel ``0000`` (T2) is used;
- a DICOM file is recognised by ``DICM`` after its 128-byte preamble, not by its name; a
  DICOM series folder is a folder holding such files (one series, as scans leave a PACS).

Only names are looked at here (and a DICOM file's first bytes); nothing is decoded.
"""

from __future__ import annotations

import re
from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: An ``.mhd`` header names a separate data file (``.raw``); an ``.mha`` holds its own voxels.
METAIMAGE_HEADER = ".mhd"
METAIMAGE_SUFFIXES = (METAIMAGE_HEADER, ".mha")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + METAIMAGE_SUFFIXES

MASK_MARK = "_segmentation"
_MASK_STEM = re.compile(rf"^(?P<case>.+){MASK_MARK}$", re.IGNORECASE)

MSD_IMAGES = "imagesTr"
MSD_LABELS = "labelsTr"
#: The channel of a multi-modal nnU-Net case that holds the T2 scan.
MSD_CHANNEL = "0000"
_MSD_CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

_DICOM_PREAMBLE = 128
_DICOM_MAGIC = b"DICM"
#: Files of a folder looked at to decide whether it is a DICOM series (it is when one is).
DICOM_PROBE = 64


def volume_suffix(path: str | Path) -> str | None:
    """The volume suffix ``path`` ends in, lower case (``.nii.gz`` for ``A.NII.GZ``), or None."""
    lower = Path(path).name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if lower.endswith(suffix)), None)


def is_volume_file(path: str | Path) -> bool:
    """Whether ``path`` is named like a NIfTI or MetaImage file."""
    return volume_suffix(path) is not None


def is_nifti(path: str | Path) -> bool:
    return volume_suffix(path) in NIFTI_SUFFIXES


def is_metaimage(path: str | Path) -> bool:
    return volume_suffix(path) in METAIMAGE_SUFFIXES


def is_metaimage_header(path: str | Path) -> bool:
    """Whether ``path`` is an ``.mhd`` header, whose voxels lie in the data file it names."""
    return volume_suffix(path) == METAIMAGE_HEADER


def case_stem(path: str | Path) -> str | None:
    """The name without its volume suffix, capitalisation kept (``Case00.nii.gz`` -> ``Case00``);
    None when ``path`` is not a volume file."""
    suffix = volume_suffix(path)
    name = Path(path).name
    return None if suffix is None else name[: -len(suffix)]


def mask_case(path: str | Path) -> str | None:
    """The case a mask file belongs to (``Case00_Segmentation.mhd`` -> ``Case00``), or None
    when ``path`` is not named as a mask."""
    marked = _MASK_STEM.match(case_stem(path) or "")
    return marked.group("case") if marked else None


def is_mask_file(path: str | Path) -> bool:
    return mask_case(path) is not None


def is_mask_of(path: str | Path, case: str) -> bool:
    """Whether ``path`` is ``case``'s mask, in any capitalisation and volume format."""
    owner = mask_case(path)
    return owner is not None and owner.lower() == case.lower()


def msd_image_case(path: str | Path) -> str | None:
    """The case an ``imagesTr/`` file holds the T2 scan of (``prostate_00_0000.nii.gz`` and
    ``prostate_00.nii.gz`` -> ``prostate_00``); None for another channel or a non-volume file."""
    stem = case_stem(path)
    if stem is None:
        return None
    channel = _MSD_CHANNEL_STEM.match(stem)
    if channel is None:
        return stem
    return channel.group("case") if channel.group("channel") == MSD_CHANNEL else None


def looks_like_dicom(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file: ``DICM`` after the 128-byte preamble, whatever
    its name. Raises OSError when the file cannot be read, so a caller can tell an unreadable
    file from one that is not DICOM."""
    with Path(path).open("rb") as handle:
        handle.seek(_DICOM_PREAMBLE)
        return handle.read(len(_DICOM_MAGIC)) == _DICOM_MAGIC


def is_dicom_series_folder(folder: str | Path, probe: int = DICOM_PROBE) -> bool:
    """Whether ``folder`` directly holds DICOM files (its first ``probe`` files, in name
    order, are looked at; hidden ones are not). Unreadable files and folders count as not
    DICOM: discovery must not fail on them, reading the series reports them."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return False
    looked = 0
    for entry in entries:
        if looked >= probe:
            break
        if entry.name.startswith("."):
            continue
        try:
            if not entry.is_file():
                continue
            looked += 1
            if looks_like_dicom(entry):
                return True
        except OSError:
            continue
    return False
