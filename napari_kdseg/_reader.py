"""napari reader: scans, masks, DICOM series folders, site folders and dataset roots.

- a NIfTI / MetaImage file opens as an image layer, or as a labels layer when its name marks
  a mask (``Case00_segmentation.nii.gz``); an image's sibling mask opens with it;
- a DICOM series folder opens as one image layer;
- a site folder or a dataset root (as :func:`napari_kdseg.data.datasets.discover` finds them,
  a folder of DICOM series folders included) opens every case as ``site/case`` with its mask
  as ``site/case prostate``. Only the first case is shown; the others are read from disk when
  their layer is first shown (headers only at opening), so a dataset opens in the time napari
  takes to add its layers.

Every layer is in millimetres and carries the scan's affine, source path and shape in
``metadata['kdseg']`` (:mod:`napari_kdseg._layers`), so a mask drawn or predicted on it can be
written back in the scan's geometry (see :mod:`napari_kdseg._writer`). A broken case in a
dataset is reported as a napari warning and the other cases still open; a file or folder that
cannot be read at all raises an error whose message names it and says why. Imports no
TensorFlow.

Which reader opens a dropped path is napari's choice, made before ``get_reader`` is called:
napari 0.9.2 (``ViewerModel._open_or_raise_error``) asks the user to choose whenever more than
one plugin's manifest matches the path and no preference is saved for it
(``settings.plugins.extension2reader``). napari's own reader matches every folder (it accepts
directories) and ``*.nii``, ``*.nii.gz``, ``*.mhd``, ``*.mha``, so every input of this reader
brings that dialog, which preselects this reader (display names sort "KD ..." first); a
plugin cannot claim a path ahead of napari's reader. The dialog's "Remember this choice"
saves it for the file's last suffix (``*.gz`` for ``.nii.gz``) or for that one folder. The
manifest lists only the volume suffixes, so other files never bring this reader into the choice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from napari_kdseg._layers import LayerData, geometry, image_layer, labels_layer, volume_layers
from napari_kdseg.core.errors import DatasetError, KdsegDataError, VolumeError
from napari_kdseg.data.datasets import Case, Dataset, Problem, discover
from napari_kdseg.data.io import Header, read_header, read_volume
from napari_kdseg.data.layout import (
    case_stem,
    is_dicom_series_folder,
    is_mask_file,
    is_mask_of,
    is_metaimage,
    is_volume_file,
)
from napari_kdseg.data.volume import Volume, check_mask_grid, volume_shape

ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

#: What a folder must hold to be opened, for the message when it holds none of it.
LOOKED_FOR = (
    "looked for NIfTI (.nii, .nii.gz) and MetaImage (.mhd, .mha) files, DICOM series "
    "folders, and site folders or dataset roots holding them"
)
#: Problems listed in one warning; the rest are counted.
_PROBLEMS_SHOWN = 8
#: Names listed when a folder holds nothing this reader opens.
_NAMES_SHOWN = 5
#: The largest label a mask shown beside its scan may hold: masks are shown and saved as uint8.
_MASK_MAX = 255


@dataclass
class ReadResult:
    """Layers read from one path and the problems met (cases skipped, masks ignored)."""

    layers: list[LayerData] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The reader for ``path`` when it is ours, from names alone, else None.

    Volume files are ours by their suffix. Every folder is taken: napari has already chosen
    this plugin for it (see the module docstring), and reading it either opens what it holds
    or says what was looked for, where declining would leave napari's bare "refused the file".
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(_is_ours(Path(p)) for p in paths):
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
    if path.is_dir():
        if is_dicom_series_folder(path):
            return ReadResult(layers=volume_layers(_read(path), None, name=path.name))
        return read_dataset(path)
    if path.is_file() and is_volume_file(path):
        return read_volume_file(path)
    if not path.exists():
        raise VolumeError(path, "does not exist")
    raise VolumeError(path, f"is not a scan or mask this plugin reads: {LOOKED_FOR}")


def read_volume_file(path: Path) -> ReadResult:
    """A scan (with its sibling mask when one exists) or, for a ``*_segmentation`` file, a mask."""
    stem = case_stem(path) or path.name
    if is_mask_file(path):
        return ReadResult(layers=[mask_layer(_read(path, labels=True), name=stem)])
    image = _read(path)
    result = ReadResult()
    sibling = find_sibling_mask(path)
    mask = None
    if sibling is not None:
        try:
            mask = _read_mask(sibling)
            _check_grid(sibling, mask, path, image)
        except KdsegDataError as error:
            result.problems.append(f"mask not opened: {error}")
            mask = None
    result.layers = volume_layers(image, mask, name=stem)
    return result


def read_dataset(root: Path) -> ReadResult:
    """Every case of a site folder or dataset root as ``site/case`` image and labels layers.

    The first case that opens is read and shown; the others are hidden and read when shown.
    """
    dataset = _discover(root)
    result = ReadResult(problems=[str(problem) for problem in dataset.problems])
    for case in dataset.cases(labelled=False):
        try:
            result.layers.extend(lazy_layers(case) if result.layers else case_layers(case))
        except KdsegDataError as error:
            problem = Problem(error.path, f"{error.problem}; case skipped", "error", *_where(case))
            result.problems.append(str(problem))
    if not result.layers:
        details = "; ".join(result.problems[:_PROBLEMS_SHOWN]) or "no cases"
        raise DatasetError(root, f"no case could be opened ({details})")
    return result


def case_layers(case: Case) -> list[LayerData]:
    """One case read now, as an image layer and (when it has one) its mask."""
    image = _read(case.image)
    mask = None if case.label is None else _read_mask(case.label)
    if mask is not None and case.label is not None:
        _check_grid(case.label, mask, case.image, image)
    return volume_layers(image, mask, name=f"{case.site}/{case.id}")


def lazy_layers(case: Case) -> list[LayerData]:
    """One case as hidden layers whose voxels are read when first shown.

    Headers are read now, so a file that is not a volume, or a mask off its scan's grid, is
    reported at opening. A DICOM series has no cheaper header than its slices: it is read now.
    """
    if case.image.is_dir():
        return _hidden(case_layers(case))
    image = _header(case.image)
    name = f"{case.site}/{case.id}"
    scan_geometry = geometry(image.affine, image.shape, case.image)
    layers = [
        image_layer(
            _voxels_when_shown(case.image, image.shape, labels=False),
            name,
            image.spacing,
            {**scan_geometry, "format": "metaimage" if is_metaimage(case.image) else "nifti"},
            visible=False,
        )
    ]
    if case.label is not None:
        mask = _header(case.label)
        check_mask_grid(case.label, mask.shape, mask.affine, case.image, image.shape, image.affine)
        layers.append(
            labels_layer(
                _voxels_when_shown(case.label, mask.shape, labels=True),
                f"{name} prostate",
                mask.spacing,
                {**scan_geometry, "source": str(case.label)},
                visible=False,
            )
        )
    return layers


def mask_layer(mask: Volume, name: str) -> LayerData:
    """A mask opened on its own: a labels layer carrying its own geometry."""
    data = mask.array
    if data.max(initial=0) <= _MASK_MAX:
        data = np.asarray(data, dtype=np.uint8)
    return labels_layer(data, name, mask.spacing, geometry(mask.affine, mask.shape, mask.source))


def find_sibling_mask(image: Path) -> Path | None:
    """``Case00_segmentation.<ext>`` (any capitalisation, any volume suffix) beside ``Case00``."""
    stem = case_stem(image)
    if stem is None or not image.parent.is_dir():
        return None
    for candidate in sorted(image.parent.iterdir()):
        if candidate.is_file() and is_mask_of(candidate, stem):
            return candidate
    return None


def _is_ours(path: Path) -> bool:
    return path.is_dir() or (path.is_file() and is_volume_file(path))


def _discover(root: Path) -> Dataset:
    """The dataset under ``root``, or an error saying what was looked for and what was found."""
    try:
        return discover(root)
    except DatasetError as error:
        if error.path != str(root):
            raise
        try:
            names = sorted(
                f"{entry.name}/" if entry.is_dir() else entry.name
                for entry in root.iterdir()
                if not entry.name.startswith(".")
            )
        except OSError as listing:
            raise DatasetError(root, f"folder cannot be read ({listing})") from listing
        raise DatasetError(root, f"holds no MRI volumes: {LOOKED_FOR}; {_found(names)}") from error


def _found(names: list[str]) -> str:
    """``'it holds a.txt, b/ and 3 more'`` or ``'it is empty'``, for messages."""
    if not names:
        return "it is empty"
    listed = ", ".join(names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return f"it holds {listed} and {more} more" if more > 0 else f"it holds {listed}"


def _voxels_when_shown(path: Path, shape: tuple[int, ...], *, labels: bool) -> da.Array:
    """A dask array of ``shape`` whose one chunk is ``path`` read by :func:`_read`.

    The file's size and modification time are part of the task's key, so napari's dask cache
    never serves the voxels of a file that has changed since.
    """
    stat = path.stat()
    dtype = np.uint8 if labels else np.float32
    read = dask.delayed(_read_voxels, pure=True)(
        path, shape, labels, stat.st_size, stat.st_mtime_ns
    )
    return da.from_delayed(read, shape=shape, dtype=dtype, meta=np.empty((0,) * len(shape), dtype))


def _read_voxels(
    path: Path, shape: tuple[int, ...], labels: bool, _size: int, _mtime_ns: int
) -> np.ndarray:
    """The voxels of a lazily opened layer, checked against the shape it was opened with
    (``_size`` and ``_mtime_ns`` only key the task, see :func:`_voxels_when_shown`)."""
    volume = _read_mask(path) if labels else _read(path)
    if volume.shape != tuple(shape):
        raise VolumeError(
            path, f"holds {volume.shape} voxels but had {tuple(shape)} when opened; open it again"
        )
    return np.asarray(volume.array, dtype=np.uint8) if labels else volume.array


def _header(path: Path) -> Header:
    """:func:`read_header` of a 3D volume file (or a 4D one holding a single volume)."""
    with _naming_the_file(path):
        header = read_header(path)
    file_shape = tuple(reversed(header.shape[:3])) + tuple(header.shape[3:])
    shape = tuple(reversed(volume_shape(path, file_shape, None)))
    return Header(shape=shape, spacing=header.spacing, affine=header.affine)


def _hidden(layers: list[LayerData]) -> list[LayerData]:
    return [(data, {**attributes, "visible": False}, kind) for data, attributes, kind in layers]


def _check_grid(mask_path: Path, mask: Volume, image_path: Path, image: Volume) -> None:
    """A mask drawn on another grid (shape, spacing, origin or axes) would mislead: refuse it."""
    check_mask_grid(mask_path, mask.shape, mask.affine, image_path, image.shape, image.affine)


def _read(path: Path, labels: bool = False) -> Volume:
    """:func:`read_volume`, with any unexpected failure turned into an error naming the file."""
    with _naming_the_file(path):
        return read_volume(path, labels=labels)


@contextlib.contextmanager
def _naming_the_file(path: Path) -> Iterator[None]:
    """Turns any unexpected failure of reading ``path`` into an error naming the file."""
    try:
        yield
    except KdsegDataError:
        raise
    except Exception as error:  # readers of damaged files raise many types
        raise VolumeError(path, f"cannot be read ({type(error).__name__}: {error})") from error


def _read_mask(path: Path) -> Volume:
    """A scan's mask, whose labels must fit the uint8 masks are shown and saved in."""
    mask = _read(path, labels=True)
    high = int(mask.array.max(initial=0))
    if high > _MASK_MAX:
        raise VolumeError(path, f"holds label {high}; a scan's mask holds labels 0..{_MASK_MAX}")
    return mask


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
