"""The five architectures and the Distiller, one ``fit`` step each, on this process's backend.

Run as ``python backend_steps.py FOLDER save|load`` with ``KERAS_BACKEND`` set (a process has
one backend); ``test_backend_parity.py`` runs it once per backend and compares the results.
``save`` (the TensorFlow run) writes each network's freshly initialised weights to FOLDER;
``load`` starts every network from those weights, so that all backends start from the same
numbers. Writes FOLDER/<backend>.npz.

For each architecture (``build_model`` on this backend, 1/8 width, 32 x 32 x 3):

- ``<name>/logits``: inference-mode logits;
- ``<name>/train``: one step of Keras' own ``fit`` as training runs it;
- ``<name>/frozen_bn``, for DeepLabV3+ and ERFNet only: the same step with batch norm in
  inference mode (``trainable = False``), the gradient of every other weight.

Both steps use the project's ``SegmentationLoss`` and ``ForegroundDice`` and plain SGD, so that
a step is the gradient itself; each records the logged loss and Dice and how far every
variable moved (batch-norm statistics included). The frozen step is there because on
these tiny maps (4 x 4 at stride 8, batch 2) training-mode batch norm makes the gradients of
those two chaotic: in TensorFlow alone, a 1e-6 relative change of the input moves parts of
their update by 5-25 % (with batch norm frozen, by 1e-4), so that of their training-mode step
only the forward quantities (loss, statistics) and the overall direction can be compared
across backends.

Then ``<name>.keras/logits``: each network loaded whole from the ``.keras`` file TensorFlow
saved (ENet's custom layers included), and ``distiller/train``: one ``fit`` step of the
Distiller, UNet++ so loaded teaching ENet with the paper's three relation losses (the
kernel-matrix adapters and the affinity weights train too). Dropout is switched off (rate 0)
so that each step is deterministic: its random masks differ between backends.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np

from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.models import MODEL_NAMES, build_model
from napari_kdseg.training.config import DistillationConfig
from napari_kdseg.training.distiller import Distiller
from napari_kdseg.training.metrics import ForegroundDice

SHAPE = (32, 32, 3)
WIDTH = 0.125
TEACHER, STUDENT = "unetpp", "enet"
LEARNING_RATE = 0.1
# Whose update is too sensitive in training mode to compare weight by weight (module docstring)
CHAOTIC_IN_TRAINING = ("erfnet", "deeplabv3plus")
# TensorFlow gives the reference numbers eagerly, which saves ~30 s of graph tracing; its graph
# path is what the rest of the suite trains with.
EAGER = keras.backend.backend() == "tensorflow"


def batch() -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype(np.float32)
    labels = (images[..., 0] + 0.5 * images[..., 1] > 0.3).astype(np.int32)  # image-dependent
    return images, labels


def _numpy(variables: list) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _without_dropout(model: keras.Model) -> keras.Model:
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):  # SpatialDropout2D included
            layer.rate = 0.0
    return model


def _freeze_batch_norm(model: keras.Model, frozen: bool) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = not frozen


def _fit_one_step(trainer: keras.Model, prefix: str, results: dict[str, np.ndarray]) -> None:
    """One ``fit`` step on :func:`batch`: the logged values and every variable's change."""
    images, labels = batch()
    before = _numpy(trainer.weights)
    history = trainer.fit(images, labels, batch_size=2, epochs=1, shuffle=False, verbose=0)
    for key, values in history.history.items():
        results[f"{prefix}/log/{key}"] = np.float64(values[-1])
    for index, (old, new) in enumerate(zip(before, _numpy(trainer.weights), strict=True)):
        results[f"{prefix}/delta/{index:04d}"] = new - old
    results[f"{prefix}/paths"] = np.array([variable.path for variable in trainer.weights])
    trainable = {id(variable) for variable in trainer.trainable_weights}
    results[f"{prefix}/trainable"] = np.array([id(v) in trainable for v in trainer.weights])


def _compile(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=SegmentationLoss(),
        metrics=[ForegroundDice()],
        run_eagerly=EAGER,
    )


def run(folder: Path, mode: str) -> dict[str, np.ndarray]:
    images, _ = batch()
    results: dict[str, np.ndarray] = {}
    models = {}
    if mode == "save":
        keras.utils.set_random_seed(0)  # the same initial weights in every run
    for name in MODEL_NAMES:
        model = _without_dropout(build_model(name, SHAPE, 2, WIDTH))
        weights = folder / f"{name}.weights.h5"
        if mode == "save":
            model.save_weights(weights)
            model.save(folder / f"{name}.keras")
        else:
            model.load_weights(weights)
        initial = model.get_weights()
        _compile(model)
        results[f"{name}/logits"] = model.predict_on_batch(images)  # JAX: one compiled call
        steps = (("frozen_bn", True),) if name in CHAOTIC_IN_TRAINING else ()
        for step, frozen in (*steps, ("train", False)):
            model.set_weights(initial)
            _freeze_batch_norm(model, frozen)
            _compile(model)
            _fit_one_step(model, f"{name}/{step}", results)
        model.set_weights(initial)
        models[name] = model

    for name in MODEL_NAMES:  # as a run saves them, and as distillation loads its teacher
        models[f"{name}.keras"] = keras.saving.load_model(folder / f"{name}.keras", compile=False)
        results[f"{name}.keras/logits"] = models[f"{name}.keras"].predict_on_batch(images)

    teacher = models[f"{TEACHER}.keras"]
    distiller = Distiller(teacher, models[STUDENT], DistillationConfig(), SegmentationLoss())
    weights = folder / "distiller.weights.h5"
    if mode == "save":  # the adapters' and affinity's initial weights too
        distiller.save_weights(weights)
    else:
        distiller.load_weights(weights)
    distiller.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), run_eagerly=EAGER)
    _fit_one_step(distiller, "distiller/train", results)
    return results


if __name__ == "__main__":
    out, mode = Path(sys.argv[1]), sys.argv[2]
    np.savez(out / f"{keras.backend.backend()}.npz", **run(out, mode))
