"""Run in a child per backend by test_labelled_backends.py: a Distiller step on a batch mixing
labelled and unlabelled samples, with a teacher read from the batch, on ``KERAS_BACKEND``.

Checks that Loss_Seg equals the segmentation loss of the labelled samples alone, that a batch
without labelled samples gives 0, and that ``fit`` trains to finite values.
"""

from __future__ import annotations

import keras
import numpy as np

from napari_kdseg.distillation.teacher import PrecomputedTeacher
from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.models import build_model
from napari_kdseg.training.config import DistillationConfig
from napari_kdseg.training.distiller import Distiller

SHAPE = (16, 16, 3)


def main() -> None:
    keras.utils.set_random_seed(0)
    student = build_model("enet", SHAPE, 2, 0.125)
    config = DistillationConfig().only(["logits", "affinity"])
    distiller = Distiller(PrecomputedTeacher(2, SHAPE), student, config, SegmentationLoss())
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    image = rng.standard_normal((4, *SHAPE)).astype(np.float32)
    x = {
        "image": image,
        "labelled": np.array([1, 0, 1, 0], np.float32),
        "teacher_logits": rng.standard_normal((4, *SHAPE[:2], 2)).astype(np.float32),
    }
    y = (image[..., 1] > 0).astype(np.int32)
    distiller.compute_loss(x, y, distiller(x))
    mixed = float(distiller.trackers["segmentation"].result())
    alone = float(SegmentationLoss().batch_loss(y[::2], student(image[::2])))
    assert abs(mixed - alone) <= 1e-5 * max(1.0, alone), (mixed, alone)

    for tracker in distiller.metrics:
        tracker.reset_state()
    none = {**x, "labelled": np.zeros(4, np.float32)}
    distiller.compute_loss(none, y, distiller(none))
    assert float(distiller.trackers["segmentation"].result()) == 0.0

    history = distiller.fit(x, y, batch_size=2, epochs=1, verbose=0).history
    assert all(np.isfinite(values[0]) for values in history.values()), history
    print(keras.backend.backend(), "ok")


if __name__ == "__main__":
    main()
