"""napari reader: scans, masks, DICOM series folders, site folders and dataset roots.

- a NIfTI / MetaImage file opens as an image layer, or as a labels layer when its name marks
  a mask (``Case00_segmentation.nii.gz``); an image's sibling mask opens with it;
- a DICOM series folder opens as one image layer, a folder of series folders as one layer each;
- a site folder or a dataset root (as :func:`napari_kdseg.data.datasets.discover` finds them)
  opens every case as ``site/case`` with its mask as ``site/case prostate``.

Every layer has the voxel spacing as ``scale`` and the scan's affine, source path and shape in
``metadata['kdseg']``, so a mask drawn or predicted on it can be written back in the scan's
geometry (see :mod:`napari_kdseg._writer`). A broken case in a dataset is reported as a napari
warning and the other cases still open; a file that cannot be read at all raises an error whose
message names the file. Imports no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_kdseg._layers import LayerData, volume_layers
from napari_kdseg.core.errors import DatasetError, KdsegDataError, VolumeError
from napari_kdseg.data.datasets import Case, Problem, discover
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.layout import (
    case_stem,
    is_mask_file,
    is_mask_of,
    is_volume_file,
    looks_like_dicom,
)
from napari_kdseg.data.volume import Volume, check_mask_grid

ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

#: Files looked at to decide whether a folder is a DICOM series (it is when one is DICOM).
_DICOM_PROBE = 64
#: Problems listed in one warning; the rest are counted.
_PROBLEMS_SHOWN = 8


@dataclass
class ReadResult:
    """Layers read from one path and the problems met (cases skipped, masks ignored)."""

    layers: list[LayerData] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The reader for ``path`` when it is ours, else None (from names and a few headers)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(_kind(Path(p)) for p in paths):
        return None
    return read_paths


def read_paths(path: str | Sequence[str]) -> list[LayerData]:
    """Read one path or several; problems become a napari warning, layers are returned."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerData] = []
    for one in paths:
        result = read_path(one)
        if result.problems:
            _warn(Path(one), result.problems)
        layers.extend(result.layers)
    return layers


def read_path(path: str | Path) -> ReadResult:
    """Layers and problems for a volume file, DICOM folder, site folder or dataset root.

    Raises a :class:`KdsegDataError` naming the path when nothing at all can be read.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "volume":
        return read_volume_file(path)
    if kind == "dicom":
        scan = _read(path)
        return ReadResult(layers=volume_layers(scan, None, name=path.name))
    if kind == "dataset":
        return read_dataset(path)
    if kind == "dicom folders":
        return read_dicom_folders(path)
    raise VolumeError(path, "not a scan, mask, DICOM series folder or dataset this plugin reads")


def read_volume_file(path: Path) -> ReadResult:
    """A scan (with its sibling mask when one exists) or, for a ``*_segmentation`` file, a mask."""
    stem = case_stem(path) or path.name
    if is_mask_file(path):
        mask = _read(path, labels=True)
        return ReadResult(layers=[labels_layer(mask, name=stem)])
    image = _read(path)
    result = ReadResult()
    sibling = find_sibling_mask(path)
    mask = None
    if sibling is not None:
        try:
            mask = _read(sibling, labels=True)
            _check_grid(sibling, mask, path, image)
        except KdsegDataError as error:
            result.problems.append(f"mask not opened: {error}")
            mask = None
    result.layers = volume_layers(image, mask, name=stem)
    return result


def read_dicom_folders(root: Path) -> ReadResult:
    """Each DICOM series sub-folder of ``root`` as an image layer named ``root/series``."""
    result = ReadResult()
    for folder in _dicom_subfolders(root):
        try:
            scan = _read(folder)
        except KdsegDataError as error:
            result.problems.append(f"{error}; series skipped")
            continue
        result.layers.extend(volume_layers(scan, None, name=f"{root.name}/{folder.name}"))
    if not result.layers:
        raise VolumeError(root, f"no DICOM series could be opened ({'; '.join(result.problems)})")
    return result


def read_dataset(root: Path) -> ReadResult:
    """Every case of a site folder or dataset root as ``site/case`` image and labels layers."""
    dataset = discover(root)
    result = ReadResult(problems=[str(problem) for problem in dataset.problems])
    for case in dataset.cases(labelled=False):
        try:
            result.layers.extend(case_layers(case))
        except KdsegDataError as error:
            problem = Problem(error.path, f"{error.problem}; case skipped", "error", *_where(case))
            result.problems.append(str(problem))
    if not result.layers:
        details = "; ".join(result.problems[:_PROBLEMS_SHOWN]) or "no cases"
        raise DatasetError(root, f"no case could be opened ({details})")
    return result


def case_layers(case: Case) -> list[LayerData]:
    """One case as an image layer and (when it has one) its mask, named ``site/case``."""
    image = _read(case.image)
    mask = None if case.label is None else _read(case.label, labels=True)
    if mask is not None and case.label is not None:
        _check_grid(case.label, mask, case.image, image)
    return volume_layers(image, mask, name=f"{case.site}/{case.id}")


def _check_grid(mask_path: Path, mask: Volume, image_path: Path, image: Volume) -> None:
    """A mask drawn on another grid (shape, spacing, origin or axes) would mislead: refuse it."""
    check_mask_grid(mask_path, mask.shape, mask.affine, image_path, image.shape, image.affine)


def labels_layer(mask: Volume, name: str) -> LayerData:
    """A mask opened on its own: a labels layer carrying its own geometry."""
    geometry = {
        "affine": mask.affine.tolist(),
        "source": str(mask.source or ""),
        "shape": list(mask.shape),
    }
    return (
        np.asarray(mask.array, dtype=np.uint8) if mask.array.max(initial=0) < 256 else mask.array,
        {"name": name, "scale": mask.spacing, "opacity": 0.4, "metadata": {"kdseg": geometry}},
        "labels",
    )


def find_sibling_mask(image: Path) -> Path | None:
    """``Case00_segmentation.<ext>`` (any capitalisation, any volume suffix) beside ``Case00``."""
    stem = case_stem(image)
    if stem is None or not image.parent.is_dir():
        return None
    for candidate in sorted(image.parent.iterdir()):
        if candidate.is_file() and is_mask_of(candidate, stem):
            return candidate
    return None


def _kind(path: Path) -> str | None:
    """``volume``, ``dicom``, ``dataset`` or None (not ours), from names and a few headers."""
    if path.is_file():
        return "volume" if is_volume_file(path) else None
    if not path.is_dir():
        return None
    if _is_dicom_folder(path):
        return "dicom"
    try:
        discover(path)
    except (DatasetError, OSError):
        return "dicom folders" if _dicom_subfolders(path) else None
    return "dataset"


def _dicom_subfolders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that hold a DICOM series (the first few are looked at)."""
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [child for child in children[:_DICOM_PROBE] if _is_dicom_folder(child)]


def _is_dicom_folder(folder: Path) -> bool:
    for count, candidate in enumerate(sorted(folder.iterdir())):
        if count >= _DICOM_PROBE:
            break
        try:
            if candidate.is_file() and looks_like_dicom(candidate):
                return True
        except OSError:
            continue  # an unreadable file does not make a folder ours
    return False


def _read(path: Path, labels: bool = False) -> Volume:
    """:func:`read_volume`, with any unexpected failure turned into an error naming the file."""
    try:
        return read_volume(path, labels=labels)
    except KdsegDataError:
        raise
    except Exception as error:  # readers of damaged files raise many types
        raise VolumeError(path, f"cannot be read ({type(error).__name__}: {error})") from error


def _where(case: Case) -> tuple[str, str]:
    return case.site, case.id


def _warn(path: Path, problems: list[str]) -> None:
    """One napari warning listing the problems met while opening ``path``."""
    from napari.utils.notifications import show_warning

    shown = problems[:_PROBLEMS_SHOWN]
    more = len(problems) - len(shown)
    lines = "\n".join(f"- {line}" for line in shown)
    tail = f"\n(and {more} more)" if more else ""
    show_warning(f"napari-kdseg opened {path} with {len(problems)} problem(s):\n{lines}{tail}")
