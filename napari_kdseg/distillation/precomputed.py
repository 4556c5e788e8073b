"""A Keras teacher's predictions computed once per case, for the teacher-map cache.

:class:`KerasTeacherMaps` runs a 2.5D teacher (a ``.keras`` file trained here) over every
slice of a prepared case, un-augmented, and gives its foreground probability on the model
grid; :class:`~napari_kdseg.teachers.maps.TeacherMapCache` stores it, the data pipeline
carries it (augmented with the image's spatial draws) and
:class:`~napari_kdseg.distillation.teacher.PrecomputedTeacher` reads it. What holds and what
does not against running the teacher at every step is measured in
``bench/teacher_cache.py``: the precomputed teacher sees the scan before augmentation, so
under a flip, rotation or scaling it gives the warped prediction of the original slice
rather than its prediction of the warped slice, and intensity augmentation does not reach it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt

from napari_kdseg.data.cache import PreparedCase
from napari_kdseg.data.datasets import Case
from napari_kdseg.data.preprocess import PreprocessConfig, stack_context


class KerasTeacherMaps:
    """A Keras segmentation model as a map teacher (see
    :class:`~napari_kdseg.teachers.maps.MapTeacher`): softmax foreground of every slice.

    ``identity`` hashes the ``.keras`` file, so retraining the teacher invalidates its maps;
    ``batch_size`` slices go through the model at a time.
    """

    def __init__(self, model: keras.Model, path: str | Path, batch_size: int = 16) -> None:
        self.model = model
        self.path = Path(path)
        self.name = self.path.name
        self.batch_size = batch_size
        with self.path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "blake2b").hexdigest()[:32]
        self._identity = f"keras {digest}"

    @classmethod
    def load(cls, path: str | Path, batch_size: int = 16) -> KerasTeacherMaps:
        return cls(keras.saving.load_model(path, compile=False), path, batch_size)

    @property
    def identity(self) -> str:
        return self._identity

    def probability(
        self, case: Case, prepared: PreparedCase, config: PreprocessConfig
    ) -> npt.NDArray[np.float32]:
        slices = prepared.image.shape[0]
        expected = (config.size, config.size, config.context)
        if tuple(self.model.input_shape[1:]) != expected:
            raise ValueError(
                f"{self.path}: teacher input {tuple(self.model.input_shape[1:])} does not match "
                f"the prepared cases' {expected}"
            )
        maps = []
        for start in range(0, slices, self.batch_size):
            stop = min(start + self.batch_size, slices)
            batch = np.stack(
                [stack_context(prepared.image, s, config.context) for s in range(start, stop)]
            ).astype(np.float32)
            logits = self.model(batch, training=False)
            probability = keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)
            maps.append(keras.ops.convert_to_numpy(probability)[..., 1:].sum(axis=-1))
        return np.concatenate(maps).astype(np.float32)
