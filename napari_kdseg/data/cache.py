"""On-disk cache of preprocessed cases, keyed by file content and preprocessing parameters.

Decoding a ``.nii.gz`` and resampling it to 384 x 384 costs far more than reading raw arrays,
and a training run, its resumption and every leave-one-site-out cell read the same cases.
Each entry is a folder of ``.npy`` files opened memory-mapped, so a run touches only the
slices it draws. The key hashes the bytes of the scan and mask (not their names or times;
for a DICOM series folder, the bytes of every file in it), the preprocessing parameters and
:data:`PREPROCESS_VERSION`, so an edited file or a new grid size can never be served a stale
entry. Entries are written to a temporary folder and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_kdseg.core.atomic import atomic_directory
from napari_kdseg.core.errors import DataWarning, VolumeError
from napari_kdseg.data.datasets import Case
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.layout import is_metaimage_header
from napari_kdseg.data.preprocess import (
    PREPROCESS_VERSION,
    Geometry,
    PreprocessConfig,
    gland_extent,
    prepare_labels,
    prepare_volume,
)
from napari_kdseg.data.volume import check_mask_grid

_ELEMENT_DATA_FILE = re.compile(r"^\s*ElementDataFile\s*=\s*(?P<name>.+?)\s*$", re.MULTILINE)


def default_cache_dir() -> Path:
    """``$KDSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/napari-kdseg`` (``~/.cache`` by default)."""
    if "KDSEG_CACHE_DIR" in os.environ:
        return Path(os.environ["KDSEG_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "napari-kdseg"


@dataclass(frozen=True)
class PreparedCase:
    """A case on the model grid: ``image`` float32 and ``label`` uint8, ``(slices, size, size)``."""

    site: str
    id: str
    image: npt.NDArray[np.float32]
    label: npt.NDArray[np.uint8] | None
    geometry: Geometry

    @property
    def gland_extent(self) -> tuple[int, int] | None:
        return None if self.label is None else gland_extent(self.label)


class PreprocessCache:
    """Prepares cases through an on-disk cache (``root/<key>/``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def key(self, case: Case, config: PreprocessConfig) -> str:
        digest = hashlib.blake2b(digest_size=20)
        recipe = {"version": PREPROCESS_VERSION, "config": config.to_json()}
        digest.update(json.dumps(recipe, sort_keys=True).encode())
        for part in content_digests(case.image):
            digest.update(part)
        if case.label is not None:
            digest.update(b"label")
            for part in content_digests(case.label):
                digest.update(part)
        return digest.hexdigest()

    def prepare(self, case: Case, config: PreprocessConfig) -> PreparedCase:
        """The case preprocessed with ``config``, from the cache when it is there.

        Raises :class:`~napari_kdseg.core.errors.VolumeError` for a scan or mask that cannot
        be read (see :func:`~napari_kdseg.data.io.read_volume`) and for a mask that is not on
        its scan's grid (shape or affine), naming both files; nothing is cached then.
        """
        entry = self.root / self.key(case, config)
        if (entry / "meta.json").exists():
            try:
                prepared = _load(entry, case)
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is rebuilt below
            else:
                self.hits += 1
                return prepared
        self.misses += 1
        image = read_volume(case.image)
        label = None if case.label is None else read_volume(case.label, labels=True)
        if label is not None:
            check_mask_grid(
                case.label, label.shape, label.affine, case.image, image.shape, image.affine
            )
        array, geometry = prepare_volume(image, config)
        mask = None if label is None else prepare_labels(label, config)
        with atomic_directory(entry) as tmp:
            np.save(tmp / "image.npy", array)
            if mask is not None:
                np.save(tmp / "label.npy", mask)
            meta: dict[str, Any] = {"geometry": geometry.to_json(), "case": case.id}
            (tmp / "meta.json").write_text(json.dumps(meta))
        return PreparedCase(case.site, case.id, array, mask, geometry)

    def prepare_all(
        self, cases: list[Case], config: PreprocessConfig, *, skip_empty: bool = True
    ) -> list[PreparedCase]:
        """Every case prepared; what training reads.

        With ``skip_empty`` (the default) a case whose mask holds no prostate on the model
        grid is left out with a :class:`~napari_kdseg.core.errors.DataWarning` naming the
        case and its mask: training on it would teach "no gland here" for a scan that has
        one, silently. An empty mask is more often a failed export than a truth.
        """
        prepared = []
        for case in cases:
            result = self.prepare(case, config)
            if skip_empty and result.label is not None and not np.any(result.label):
                warnings.warn(
                    f"{case.label}: mask is empty (no prostate voxels on the "
                    f"{config.size} x {config.size} model grid); case {case.site}/{case.id} "
                    "is skipped",
                    DataWarning,
                    stacklevel=2,
                )
                continue
            prepared.append(result)
        return prepared


def _load(entry: Path, case: Case) -> PreparedCase:
    meta = json.loads((entry / "meta.json").read_text())
    image = np.load(entry / "image.npy", mmap_mode="r")
    label_path = entry / "label.npy"
    label = np.load(label_path, mmap_mode="r") if label_path.exists() else None
    return PreparedCase(case.site, case.id, image, label, Geometry.from_json(meta["geometry"]))


def content_digests(path: Path) -> list[bytes]:
    """The digests of the bytes that define the volume at ``path``: one per file, and for a
    DICOM series folder one per file in it, sorted, so that renaming or reordering slice
    files (which :func:`~napari_kdseg.data.dicom.read_dicom_series` orders by position) keeps
    the key, and any changed, added or removed file changes it."""
    if path.is_dir():
        return sorted(_file_digest(file) for file in _folder_files(path))
    return [_file_digest(file) for file in _content_files(path)]


def _folder_files(folder: Path) -> list[Path]:
    """The files the DICOM reader reads in ``folder``: every file below it but hidden ones."""
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    except OSError as error:
        raise VolumeError(folder, f"folder cannot be read ({error.strerror or error})") from error
    if not files:
        raise VolumeError(folder, "folder is empty: expected a DICOM series")
    return files


def _content_files(path: Path) -> list[Path]:
    """The files whose bytes define a volume: a MetaImage header names its raw data file."""
    if not is_metaimage_header(path):
        return [path]
    match = _ELEMENT_DATA_FILE.search(path.read_text(errors="replace"))
    if match is None or match.group("name") == "LOCAL":
        return [path]
    return [path, path.parent / match.group("name")]


def _file_digest(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "blake2b").digest()
    except OSError as error:
        raise VolumeError(path, f"cannot be read ({error.strerror or error})") from error
