"""Run as a script with KDSEG_LOGICAL_CPUS=2: the losses a model and a Distiller report on
one batch, and the size of one SGD step, on one device and mirrored over two (printed as
JSON). The batch is two copies of the same half, so each replica sees exactly what one device
sees and the numbers must agree.
"""

from __future__ import annotations

import json

import keras
import numpy as np

from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.models import build_model
from napari_kdseg.training.config import DistillationConfig
from napari_kdseg.training.distiller import Distiller
from napari_kdseg.training.distribute import strategy_scope

SHAPE = (32, 32, 3)


def _losses() -> dict[str, float]:
    keras.utils.set_random_seed(0)
    student = build_model("espnet", SHAPE, 2, 0.125)
    student.compile(optimizer=keras.optimizers.SGD(0.1), loss=SegmentationLoss())
    teacher = build_model("unetpp", SHAPE, 2, 0.125)
    distiller = Distiller(teacher, build_model("espnet", SHAPE, 2, 0.125), DistillationConfig(),
                          SegmentationLoss())  # fmt: skip
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    half = np.random.default_rng(1).normal(size=(4, *SHAPE)).astype("float32")
    x = np.concatenate([half, half])
    y = (x[..., 1] > 0.3).astype("int32")
    alone = student.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["loss"]
    taught = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)["loss"]
    return {
        "model": alone,
        "distiller": taught,
        "model_step": _step_size(student, x, y),
        "distiller_step": _step_size(distiller, x, y),
    }


def _step_size(trainer: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Sum of the absolute changes of the trainable weights after one SGD step."""
    trainer.optimizer.build(trainer.trainable_variables)
    before = [np.array(v) for v in trainer.trainable_variables]
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    after = [np.array(v) for v in trainer.trainable_variables]
    return float(sum(np.abs(a - b).sum() for a, b in zip(after, before, strict=True)))


if __name__ == "__main__":
    with strategy_scope("mirrored") as replicas:  # splits the CPU before TensorFlow starts
        mirrored = _losses()
    print(json.dumps({"replicas": replicas, "mirrored": mirrored, "single": _losses()}))
