"""Teacher predictions computed once per scan and cached on disk, on the student's model grid.

A teacher that is expensive or lives outside Keras (TAPS: a 3D model on ONNX Runtime, about
30 s a scan on one core) is run once per scan ahead of training; its foreground probability
is brought onto the model grid of the case (:class:`~napari_kdseg.data.cache.PreparedCase`),
voxel for voxel with the prepared image, and the data pipeline carries it in the batch
(:class:`~napari_kdseg.training.pipeline.SliceDataset`'s ``teacher_maps``), where
:class:`~napari_kdseg.distillation.teacher.PrecomputedTeacher` reads it.

The cache is keyed like the preprocessing cache, on content: the bytes of the scan (every file
of a DICOM series folder), the preprocessing recipe, :data:`TEACHER_MAPS_VERSION` and the
teacher's :attr:`MapTeacher.identity` (for TAPS: its version, the hash of its ONNX file and
the version of the pipeline rebuilt here). The mask is not in the key: editing a mask does not
change what the teacher sees. Keras-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from napari_kdseg.core.atomic import atomic_directory
from napari_kdseg.data.cache import PreparedCase, PreprocessCache, content_digests
from napari_kdseg.data.datasets import Case
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.preprocess import PREPROCESS_VERSION, PreprocessConfig, prepare_probability
from napari_kdseg.data.volume import Volume
from napari_kdseg.teachers import TAPS, TAPS_DESCRIPTION, TAPS_PROVENANCE

#: Bump when what is stored for a (scan, recipe, teacher) changes, so older entries are unused.
TEACHER_MAPS_VERSION = 1
#: The version of the TAPS pipeline rebuilt in :mod:`napari_kdseg.teachers.taps`: bump when
#: its output for the same model file changes. 2: beyond TAPS's foreground crop the map is 0
#: (background, as TAPS's mask), not the 0.5 of its zero logits there.
TAPS_PIPELINE_VERSION = 2


class MapTeacher(Protocol):
    """A teacher that gives a case's foreground probability on the case's model grid.

    ``name`` names it in messages; ``identity`` is what the cache key holds for it and must
    change whenever its predictions may (its weights' hash, its pipeline's version).
    """

    name: str

    @property
    def identity(self) -> str: ...

    def probability(
        self, case: Case, prepared: PreparedCase, config: PreprocessConfig
    ) -> npt.NDArray[np.float32]:
        """``(slices, size, size)`` in [0, 1], on ``prepared.image``'s grid."""
        ...


class SourceGridTeacher:
    """A teacher run on a case's scan as read from disk (any orientation, the source grid),
    whose probability is then brought to the model grid the way the image was
    (:func:`~napari_kdseg.data.preprocess.prepare_probability`: the same reorientation and
    in-plane resampling, linear).

    ``predict`` maps the scan to its foreground probability on the scan's own grid, array
    order ``(k, j, i)`` as :class:`~napari_kdseg.data.volume.Volume`. ``details`` describe
    the teacher for the model card (JSON data).
    """

    def __init__(
        self,
        name: str,
        identity: str,
        predict: Callable[[Volume], npt.NDArray[np.floating]],
        details: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self._identity = identity
        self.predict = predict
        self.details = dict(details or {})

    @property
    def identity(self) -> str:
        return self._identity

    def probability(
        self, case: Case, prepared: PreparedCase, config: PreprocessConfig
    ) -> npt.NDArray[np.float32]:
        scan = read_volume(case.image)
        probability = np.asarray(self.predict(scan), dtype=np.float32)
        if probability.shape != scan.shape:
            raise ValueError(
                f"{case.image}: teacher {self.name!r} returned a map of shape "
                f"{probability.shape} for a scan of shape {scan.shape}"
            )
        return prepare_probability(scan.with_array(probability), config)


def taps_teacher(
    threads: int | None = None, model_path: str | Path | None = None
) -> SourceGridTeacher:
    """TAPS as a :class:`SourceGridTeacher`. Its ONNX session opens at the first scan the
    cache does not hold, so a run whose maps are all cached never loads the model."""
    from napari_kdseg.teachers.taps import VERSION, TapsTeacher, taps_model_path

    path = Path(model_path) if model_path is not None else taps_model_path()
    with path.open("rb") as handle:
        model_hash = hashlib.file_digest(handle, "blake2b").hexdigest()[:32]
    identity = f"taps {VERSION}, model {model_hash}, pipeline {TAPS_PIPELINE_VERSION}"
    session: list[TapsTeacher] = []

    def predict(scan: Volume) -> npt.NDArray[np.float32]:
        if not session:
            session.append(TapsTeacher(path, threads=threads))
        return session[0](scan).teacher_probability

    details = {
        "kind": TAPS,
        "description": TAPS_DESCRIPTION,
        "provenance": TAPS_PROVENANCE,
        "model_blake2b": model_hash,
    }
    return SourceGridTeacher(TAPS, identity, predict, details)


class TeacherMapCache:
    """Teacher maps through an on-disk cache (``root/<key>/probability.npy``), opened
    memory-mapped; ``hits`` and ``misses`` count what it served and computed."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else PreprocessCache().root / "teacher-maps"
        self.hits = 0
        self.misses = 0

    @classmethod
    def beside(cls, cache: PreprocessCache) -> TeacherMapCache:
        """The teacher maps' cache in a folder of ``cache``'s root (its entries are hex keys,
        which never clash with that folder's name)."""
        return cls(cache.root / "teacher-maps")

    def key(self, case: Case, config: PreprocessConfig, teacher: MapTeacher) -> str:
        digest = hashlib.blake2b(digest_size=20)
        recipe = {
            "preprocess_version": PREPROCESS_VERSION,
            "maps_version": TEACHER_MAPS_VERSION,
            "config": config.to_json(),
            "teacher": teacher.identity,
        }
        digest.update(json.dumps(recipe, sort_keys=True).encode())
        for part in content_digests(case.image):
            digest.update(part)
        return digest.hexdigest()

    def prepare(
        self, case: Case, prepared: PreparedCase, config: PreprocessConfig, teacher: MapTeacher
    ) -> npt.NDArray[np.float32]:
        """``teacher``'s foreground probability of ``case`` on ``prepared``'s grid, from the
        cache when it is there; computed and stored otherwise."""
        entry = self.root / self.key(case, config, teacher)
        stored = entry / "probability.npy"
        if stored.exists():
            try:
                probability = np.load(stored, mmap_mode="r")
            except (OSError, ValueError):
                pass  # a damaged entry is computed again below
            else:
                if probability.shape == prepared.image.shape:
                    self.hits += 1
                    return probability
        self.misses += 1
        probability = np.asarray(teacher.probability(case, prepared, config), dtype=np.float32)
        if probability.shape != prepared.image.shape:
            raise ValueError(
                f"{case.image}: teacher {teacher.name!r} gave a map of shape "
                f"{probability.shape} on the model grid, whose image has shape "
                f"{prepared.image.shape}"
            )
        if not np.all(np.isfinite(probability)) or probability.min() < 0 or probability.max() > 1:
            raise ValueError(
                f"{case.image}: teacher {teacher.name!r} gave values outside [0, 1] or "
                "non-finite ones; a map is a foreground probability"
            )
        with atomic_directory(entry) as tmp:
            np.save(tmp / "probability.npy", probability)
            meta = {"case": f"{case.site}/{case.id}", "teacher": teacher.identity}
            (tmp / "meta.json").write_text(json.dumps(meta))
        return probability

    def prepare_all(
        self,
        cases: list[Case],
        prepared: list[PreparedCase],
        config: PreprocessConfig,
        teacher: MapTeacher,
        progress: Callable[[int, int, Case], None] | None = None,
    ) -> list[npt.NDArray[np.float32]]:
        """One map per case, in order; ``progress(done, total, case)`` after each."""
        if len(cases) != len(prepared):
            raise ValueError(f"{len(cases)} cases but {len(prepared)} prepared cases")
        maps = []
        for number, (case, ready) in enumerate(zip(cases, prepared, strict=True), start=1):
            maps.append(self.prepare(case, ready, config, teacher))
            if progress is not None:
                progress(number, len(cases), case)
        return maps
