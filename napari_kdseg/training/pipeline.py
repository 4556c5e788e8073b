"""The Keras input pipeline: batches of 2.5D slices from preprocessed (cached) cases.

A :class:`keras.utils.PyDataset`, so the same pipeline feeds ``fit`` on the TensorFlow, JAX
and PyTorch backends and can prepare batches in worker threads while the model trains. It
imports Keras and so belongs to the training side; the napari process never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from napari_kdseg.data.augment import AugmentConfig, augment_sample
from napari_kdseg.data.cache import PreparedCase
from napari_kdseg.data.preprocess import middle_extent, slices_around, stack_context
from napari_kdseg.distillation.teacher import HAS_GROUND_TRUTH, IMAGE, LABELLED, TEACHER_LOGITS

#: The floor of a teacher's probabilities turned into logits: log(1e-4) = -9.2 keeps a
#: confident teacher confident without an infinite logit.
PROBABILITY_FLOOR = 1e-4


def teacher_logits(probability: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Two-class logits ``(..., 2)`` whose softmax is ``(1 - p, p)``: ``log(1 - p), log(p)``
    with ``p`` kept in ``[1e-4, 1 - 1e-4]``. Softmax and arg-max read logits up to a shift per
    pixel, so these stand for the teacher's own logits in LM (at any temperature) and AAM."""
    p = np.clip(np.asarray(probability, dtype=np.float32), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.stack([np.log1p(-p), np.log(p)], axis=-1).astype(np.float32)


class SliceDataset(keras.utils.PyDataset):
    """Batches ``x (batch, size, size, context)`` float32 and ``y (batch, size, size)`` int32.

    ``slices="gland"`` draws the slices inside each mask's z-extent plus ``outside_share`` of
    the others (SAML's training protocol); ``slices="all"`` walks every slice (validation).
    Order and augmentations are seeded per epoch and batch, so a run is reproducible and a
    resumed run sees the batches an uninterrupted one would.

    Cases without a mask are refused unless ``unlabelled`` is set (a distillation, whose terms
    need no mask). Then an unlabelled case's slices are drawn as a labelled one's around the
    centred :data:`~napari_kdseg.data.preprocess.UNLABELLED_MIDDLE_SHARE` of its slices (no
    gland extent is known), its ``y`` is all background, and ``x`` is a dict:
    ``{"image": ..., "labelled": (batch,) float32}`` with 1 for a sample that has a mask and
    0 for one that does not; the Distiller takes the segmentation loss and Dice from the
    labelled samples only.

    ``teacher_maps`` gives, per case, a teacher's foreground probability on the case's model
    grid (``(slices, size, size)``, as :class:`PreparedCase.image`); ``x`` is then a dict
    carrying each sample's map as two-class logits under ``"teacher_logits"``
    (:func:`teacher_logits`), augmented with the same spatial draws as the image and mask.
    With ``teacher_labels`` as well, a case without a mask takes the teacher's mask (its map
    above 0.5; exactly 0.5 is where TAPS predicted nothing, outside its crop) as ``y`` and
    counts as labelled: the hard-label baseline, and validation against
    the teacher where no scan has a mask. Its slices are drawn as an unlabelled case's still,
    so the two ways of learning from the teacher see the same slices.

    ``flag_ground_truth`` makes ``x`` a dict carrying ``"has_ground_truth"`` ``(batch,)``
    float32 as well: 1 for a sample whose case has a mask of its own, 0 for one without,
    whether or not the teacher's mask stands in for it (the Distiller's terms then read the
    samples without, ``DistillationConfig.distil_on``).

    Without unlabelled cases, teacher maps and that flag, ``x`` is the image batch itself, as
    before.
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        batch_size: int,
        context: int,
        *,
        slices: str = "gland",
        outside_share: float = 0.0,
        augment: AugmentConfig | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_remainder: bool = False,
        unlabelled: bool = False,
        teacher_maps: Sequence[npt.NDArray[np.floating]] | None = None,
        teacher_labels: bool = False,
        flag_ground_truth: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if slices not in ("gland", "all"):
            raise ValueError(f"slices must be 'gland' or 'all', got {slices!r}")
        without_mask = [f"{c.site}/{c.id}" for c in cases if c.label is None]
        if without_mask and not (unlabelled or teacher_labels):
            raise ValueError(
                f"cases without masks cannot be used for training: {without_mask}; only a "
                "distillation can use them (SliceDataset(unlabelled=True))"
            )
        self.cases = list(cases)
        self.teacher_maps = None if teacher_maps is None else list(teacher_maps)
        if self.teacher_maps is not None:
            _check_maps(self.cases, self.teacher_maps)
        elif teacher_labels:
            raise ValueError("teacher_labels needs teacher_maps: the teacher's masks are its maps")
        self.teacher_labels = teacher_labels
        self.flag_ground_truth = flag_ground_truth
        self.has_unlabelled = bool(without_mask) and not teacher_labels
        self.batch_size = batch_size
        self.context = context
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder
        rng = np.random.default_rng(seed)
        index = []
        for case_number, case in enumerate(self.cases):
            count = case.image.shape[0]
            if slices == "all":
                chosen = np.arange(count)
            elif case.label is None:
                chosen = slices_around(middle_extent(count), count, outside_share, rng)
            else:
                chosen = slices_around(case.gland_extent, count, outside_share, rng)
            index.extend((case_number, int(s)) for s in chosen)
        if not index:
            raise ValueError("no slices to draw: every mask is empty and outside_share is 0")
        self.index = np.asarray(index, dtype=np.int64)
        self.epoch = 0
        self._order = self._epoch_order()

    def __len__(self) -> int:
        count = len(self.index) / self.batch_size
        return int(count) if self.drop_remainder else int(np.ceil(count))

    @property
    def carries_dict(self) -> bool:
        """Whether ``x`` is a dict (unlabelled cases, teacher maps or the ground-truth flag) or
        the image batch."""
        return self.has_unlabelled or self.teacher_maps is not None or self.flag_ground_truth

    def __getitem__(self, batch: int) -> tuple[Any, npt.NDArray[np.int32]]:
        rows = self._order[batch * self.batch_size : (batch + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, batch])
        images, masks, labelled, ground_truth, maps = [], [], [], [], []
        for case_number, slice_index in self.index[rows]:
            case = self.cases[case_number]
            image = stack_context(case.image, int(slice_index), self.context)
            if case.label is None and self.teacher_labels:
                assert self.teacher_maps is not None
                mask = (self.teacher_maps[case_number][slice_index] > 0.5).astype(np.uint8)
            elif case.label is None:
                mask = np.zeros(case.image.shape[1:], dtype=np.uint8)
            else:
                mask = np.asarray(case.label[slice_index])
            extra = (
                [] if self.teacher_maps is None else [self.teacher_maps[case_number][slice_index]]
            )
            if self.augment is not None:
                image, mask, extra = augment_sample(image, mask, extra, self.augment, rng)
            images.append(image)
            masks.append(mask)
            labelled.append(case.label is not None or self.teacher_labels)
            ground_truth.append(case.label is not None)
            maps += extra
        x = np.stack(images).astype(np.float32)
        y = np.stack(masks).astype(np.int32)
        if not self.carries_dict:
            return x, y
        inputs: dict[str, npt.NDArray[np.float32]] = {IMAGE: x}
        if self.has_unlabelled:
            inputs[LABELLED] = np.asarray(labelled, dtype=np.float32)
        if self.flag_ground_truth:
            inputs[HAS_GROUND_TRUTH] = np.asarray(ground_truth, dtype=np.float32)
        if self.teacher_maps is not None:
            inputs[TEACHER_LOGITS] = teacher_logits(np.stack(maps))
        return inputs, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._epoch_order()

    @property
    def num_slices(self) -> int:
        return len(self.index)

    def _epoch_order(self) -> npt.NDArray[np.int64]:
        if not self.shuffle:
            return np.arange(len(self.index))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.index))


def _check_maps(cases: Sequence[PreparedCase], maps: Sequence[npt.NDArray[np.floating]]) -> None:
    if len(maps) != len(cases):
        raise ValueError(f"{len(maps)} teacher maps for {len(cases)} cases: give one per case")
    for case, teacher_map in zip(cases, maps, strict=True):
        if teacher_map.shape != case.image.shape:
            raise ValueError(
                f"{case.site}/{case.id}: the teacher's map has shape {teacher_map.shape}, the "
                f"case's model grid {case.image.shape}; prepare both with the same settings"
            )
