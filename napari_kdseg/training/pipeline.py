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

from napari_kdseg.data.augment import AugmentConfig, augment_slice
from napari_kdseg.data.cache import PreparedCase
from napari_kdseg.data.preprocess import stack_context, training_slices


class SliceDataset(keras.utils.PyDataset):
    """Batches ``x (batch, size, size, context)`` float32 and ``y (batch, size, size)`` int32.

    ``slices="gland"`` draws the slices inside each mask's z-extent plus ``outside_share`` of
    the others (SAML's training protocol); ``slices="all"`` walks every slice (validation).
    Order and augmentations are seeded per epoch and batch, so a run is reproducible and a
    resumed run sees the batches an uninterrupted one would.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if slices not in ("gland", "all"):
            raise ValueError(f"slices must be 'gland' or 'all', got {slices!r}")
        unlabelled = [f"{c.site}/{c.id}" for c in cases if c.label is None]
        if unlabelled:
            raise ValueError(f"cases without masks cannot be used for training: {unlabelled}")
        self.cases = list(cases)
        self.batch_size = batch_size
        self.context = context
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder
        rng = np.random.default_rng(seed)
        index = []
        for case_number, case in enumerate(self.cases):
            assert case.label is not None
            if slices == "gland":
                chosen = training_slices(case.label, outside_share, rng)
            else:
                chosen = np.arange(case.label.shape[0])
            index.extend((case_number, int(s)) for s in chosen)
        if not index:
            raise ValueError("no slices to draw: every mask is empty and outside_share is 0")
        self.index = np.asarray(index, dtype=np.int64)
        self.epoch = 0
        self._order = self._epoch_order()

    def __len__(self) -> int:
        count = len(self.index) / self.batch_size
        return int(count) if self.drop_remainder else int(np.ceil(count))

    def __getitem__(self, batch: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        rows = self._order[batch * self.batch_size : (batch + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, batch])
        images, masks = [], []
        for case_number, slice_index in self.index[rows]:
            case = self.cases[case_number]
            assert case.label is not None
            image = stack_context(case.image, int(slice_index), self.context)
            mask = np.asarray(case.label[slice_index])
            if self.augment is not None:
                image, mask = augment_slice(image, mask, self.augment, rng)
            images.append(image)
            masks.append(mask)
        return np.stack(images).astype(np.float32), np.stack(masks).astype(np.int32)

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
