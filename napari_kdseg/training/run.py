"""Training runs: a model alone (teacher, or student baseline) and a distilled student.

Both read the chosen sites through the preprocessing cache, hold out a share of each site's
cases for validation, keep the weights with the best validation Dice, stream JSON-lines
progress, log every epoch to CSV, and save the trained student (or teacher) alone as a
``.keras`` file with a JSON model card beside it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from napari_kdseg import __version__
from napari_kdseg.core.atomic import atomic_path, remove_stale_temporaries
from napari_kdseg.core.errors import DatasetError, report_data_warnings
from napari_kdseg.data.cache import PreparedCase, PreprocessCache
from napari_kdseg.data.datasets import Dataset, split_cases
from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.models import build_model
from napari_kdseg.training.checkpoint import (
    EpochCheckpoint,
    StopAtStepBoundary,
    StopRequest,
    checkpoint_epochs,
    load_state,
    stop_on_signals,
)
from napari_kdseg.training.config import TrainConfig
from napari_kdseg.training.distiller import Distiller
from napari_kdseg.training.distribute import (
    same_on_every_worker,
    strategy_scope,
    worker_output,
    worker_role,
)
from napari_kdseg.training.metrics import ForegroundDice
from napari_kdseg.training.pipeline import SliceDataset
from napari_kdseg.training.progress import JsonLinesProgress, emit, muted
from napari_kdseg.training.schedule import CyclicLearningRate

CLASS_NAMES = ("background", "prostate")


@dataclass(frozen=True)
class RunResult:
    """What a run left: the model and its card, or ``stopped`` with a resumable checkpoint."""

    model_path: Path | None
    card_path: Path | None
    best_val_dice: float | None
    history: dict[str, list[float]]
    stopped: bool = False


def load_split(
    dataset: Dataset, sites: list[str], config: TrainConfig, cache: PreprocessCache
) -> tuple[list[PreparedCase], list[PreparedCase]]:
    """Preprocessed (training, validation) cases: ``validation_fraction`` of each site held out."""
    train, validation = [], []
    for site in sites:
        cases = dataset.cases([site])
        if not cases:
            raise DatasetError(dataset.site(site).path, "site has no labelled cases to train on")
        kept, held = split_cases(cases, config.validation_fraction, config.seed)

        # Skipped cases (an empty mask) are announced in the progress stream, where the
        # napari panel shows them, not only as a Python warning on stderr.
        def announce(message: str, site: str = site) -> None:
            emit("warning", site=site, message=message)

        with report_data_warnings(announce):
            train += cache.prepare_all(kept, config.preprocess)
            validation += cache.prepare_all(held, config.preprocess)
    if not train:
        raise DatasetError(dataset.root, f"no usable training cases left in sites {sites}")
    return train, validation


def train(
    dataset: Dataset,
    sites: list[str],
    config: TrainConfig,
    out: Path,
    cache: PreprocessCache | None = None,
    progress_every: int = 10,
    strategy: str = "default",
    mixed_precision: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train ``config.model`` alone on ``sites`` (a teacher, or a student baseline).

    Refuses an ``out`` that already holds a finished model unless ``overwrite``.
    """
    with strategy_scope(strategy, mixed_precision) as replicas:
        _refuse_finished_model(out, config.model, overwrite)
        model = _build(config)
        model.compile(
            optimizer=_optimizer(config),
            loss=SegmentationLoss(kind=config.segmentation_loss),
            metrics=[ForegroundDice()],
        )
        _build_optimizer(model)
        placement = _placement(strategy, replicas, mixed_precision)
        return _fit(
            model, model, dataset, sites, config, out, cache, progress_every, None, placement
        )


def distill(
    dataset: Dataset,
    sites: list[str],
    config: TrainConfig,
    teacher_path: Path,
    out: Path,
    cache: PreprocessCache | None = None,
    progress_every: int = 10,
    strategy: str = "default",
    mixed_precision: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train the student ``config.model`` from the teacher in ``teacher_path`` (eq. 8).

    Refuses an ``out`` that already holds a finished model unless ``overwrite``.
    """
    with strategy_scope(strategy, mixed_precision) as replicas:
        _refuse_finished_model(out, config.model, overwrite)
        teacher = keras.saving.load_model(teacher_path, compile=False)
        expected = (config.preprocess.size, config.preprocess.size, config.preprocess.context)
        if tuple(teacher.input_shape[1:]) != expected:
            raise ValueError(
                f"{teacher_path}: teacher takes inputs {tuple(teacher.input_shape[1:])}, but "
                f"this run feeds {expected} (size, size, context); train both at the same grid"
            )
        student = _build(config)
        distiller = Distiller(
            teacher, student, config.distillation, SegmentationLoss(kind=config.segmentation_loss)
        )
        distiller.compile(optimizer=_optimizer(config))
        _build_optimizer(distiller)
        placement = _placement(strategy, replicas, mixed_precision)
        return _fit(
            distiller,
            student,
            dataset,
            sites,
            config,
            out,
            cache,
            progress_every,
            teacher_path,
            placement,
        )


def _build_optimizer(trainer: keras.Model) -> None:
    """Create the optimizer's slots eagerly, before ``fit`` traces its first step.

    Keras 3 on TensorFlow otherwise creates them inside the traced step, which then traces
    twice: measured, this halves the first epoch (ENet 40 s to 21 s at 32 x 32 on 2 cores).
    """
    trainer.optimizer.build(trainer.trainable_variables)


def _placement(strategy: str, replicas: int, mixed_precision: bool) -> dict[str, Any]:
    """How the run is spread over devices; recorded in the model card and the start event."""
    placement: dict[str, Any] = {
        "strategy": strategy,
        "replicas": replicas,
        "mixed_precision": mixed_precision,
    }
    if strategy == "multi-worker":
        placement["workers"] = worker_role().workers
    return placement


def _build(config: TrainConfig) -> keras.Model:
    size, context = config.preprocess.size, config.preprocess.context
    return build_model(config.model, (size, size, context), len(CLASS_NAMES), config.width)


def _optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    schedule = CyclicLearningRate(
        maximum=config.learning_rate,
        minimum=config.min_learning_rate,
        step_size=config.cycle_step_size,
    )
    return keras.optimizers.Adam(learning_rate=schedule)


class _KeepBest(keras.callbacks.Callback):
    """Saves ``network`` (the student alone) whenever validation Dice improves, atomically,
    and keeps those weights in memory so the run can end on them without reloading."""

    def __init__(self, network: keras.Model, path: Path, monitor: str) -> None:
        super().__init__()
        self.network, self.path, self.monitor = network, path, monitor
        self.best: float | None = None
        self.best_weights: list[Any] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and value <= self.best):
            return
        self.best = float(value)
        self.best_weights = self.network.get_weights()
        with atomic_path(self.path) as tmp:
            self.network.save(tmp)
        emit(
            "artifact",
            kind="best_checkpoint",
            path=str(self.path),
            epoch=epoch + 1,
            **{self.monitor: self.best},
        )


def _fit(
    trainer: keras.Model,
    network: keras.Model,
    dataset: Dataset,
    sites: list[str],
    config: TrainConfig,
    out: Path,
    cache: PreprocessCache | None,
    progress_every: int,
    teacher: Path | None,
    placement: dict[str, Any],
) -> RunResult:
    """Runs on every worker of a multi-worker run (saves are collective); only the chief
    writes into ``out`` and streams progress, the others write to a scratch folder."""
    role = worker_role()
    with worker_output(out, role) as target, muted(not role.chief):
        result = _fit_into(
            trainer, network, dataset, sites, config, out, target, cache, progress_every,
            teacher, placement,
        )  # fmt: skip
    if role.chief:
        return result
    return dataclasses.replace(result, model_path=None, card_path=None)  # scratch is gone


def _fit_into(
    trainer: keras.Model,
    network: keras.Model,
    dataset: Dataset,
    sites: list[str],
    config: TrainConfig,
    out: Path,
    target: Path,
    cache: PreprocessCache | None,
    progress_every: int,
    teacher: Path | None,
    placement: dict[str, Any],
) -> RunResult:
    """Resume from ``out``, write into ``target`` (``out`` itself on the chief)."""
    target.mkdir(parents=True, exist_ok=True)
    for folder in (target, target / "resume"):  # a killed run's half-written files
        remove_stale_temporaries(folder)
    keras.utils.set_random_seed(config.seed)
    train_cases, val_cases = load_split(dataset, sites, config, cache or PreprocessCache())
    context = config.preprocess.context
    batches = SliceDataset(
        train_cases,
        config.batch_size,
        context,
        augment=config.augment,
        outside_share=config.outside_share,
        seed=config.seed,
    )
    validation = (
        SliceDataset(val_cases, config.batch_size, context, slices="all", shuffle=False)
        if val_cases
        else None
    )
    for data in (batches, validation):
        _feed_every_replica(data, placement["replicas"])
    best_path = target / f"{config.model}.best.keras"
    resume_dir = target / "resume"
    identity = {"train": config.to_json(), "sites": sites, "teacher": _str_or_none(teacher)}
    request = StopRequest()
    if not same_on_every_worker(checkpoint_epochs(out / "resume")):  # else they would hang
        raise ValueError(
            f"{out}: the workers found different checkpoints to resume from; give every "
            "worker the same --out on a shared filesystem, or a fresh one"
        )
    state = load_state(trainer, out / "resume", identity)
    if state is not None:
        emit("resumed", epochs_done=state["epochs_done"], checkpoint=str(resume_dir))
    epochs_done = state["epochs_done"] if state else 0
    previous_best = state["best_val_dice"] if state else None
    checkpoint = EpochCheckpoint(resume_dir, identity)
    checkpoint.best_val_dice = previous_best
    if epochs_done:
        _truncate_log(target / "log.csv", epochs_done)
    # Order matters: the checkpoint is on disk before the "epoch" event announces the epoch.
    callbacks: list[keras.callbacks.Callback] = [
        checkpoint,
        StopAtStepBoundary(request),
        JsonLinesProgress(
            len(batches),
            config.epochs,
            every=progress_every,
            initial_epoch=epochs_done,
            placement=placement,
        ),
        keras.callbacks.CSVLogger(str(target / "log.csv"), append=epochs_done > 0),
    ]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(target / "tensorboard")))
    keep_best = None
    if validation is not None:
        keep_best = _KeepBest(network, best_path, "val_dice")
        keep_best.best = previous_best
        callbacks.insert(0, keep_best)
    started = time.perf_counter()
    with stop_on_signals(request):
        history = trainer.fit(
            batches,
            validation_data=validation,
            epochs=config.epochs,
            initial_epoch=epochs_done,
            callbacks=callbacks,
            verbose=0,
        ).history
    seconds = time.perf_counter() - started
    history = {k: [float(v) for v in vs] for k, vs in history.items()}
    best = max(
        [v for v in (previous_best, keep_best and keep_best.best) if v is not None], default=None
    )
    if request.requested:
        emit(
            "stopped",
            signal=request.signal,
            checkpoint=str(resume_dir),
            epochs_done=checkpoint_epochs(resume_dir),
            hint="run the same command again to resume from the last finished epoch",
        )
        return RunResult(None, None, best, history, stopped=True)

    # Counted before the best weights come back: for a model trained alone the network is
    # the trainer, and loading a .keras file restores that epoch's optimizer state too.
    steps = int(keras.ops.convert_to_numpy(trainer.optimizer.iterations))
    model_path = target / f"{config.model}.keras"
    if keep_best is not None and keep_best.best_weights is not None:
        network.set_weights(keep_best.best_weights)
    elif best_path.exists():  # the best epoch came before a resume
        network.load_weights(best_path)  # no new variables: their creation is a collective
    with atomic_path(model_path) as tmp:
        network.save(tmp)
    card = model_card(config, sites, teacher, history, best, seconds, len(batches), steps)
    card["training"]["placement"] = placement
    card_path = target / f"{config.model}.json"
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=2))
    shutil.rmtree(resume_dir, ignore_errors=True)  # finished: nothing left to resume
    emit("artifact", kind="model", path=str(model_path), card=str(card_path))
    emit("done", best_val_dice=best, seconds=round(seconds, 1), optimizer_steps=steps)
    return RunResult(model_path, card_path, best, history)


class FinishedModelError(ValueError):
    """The output folder already holds a finished model and replacing it was not asked for."""


def _refuse_finished_model(out: Path, model: str, overwrite: bool) -> None:
    """Never replace a finished model unasked; every worker must reach the same verdict,
    since one that trains alone would wait for the others' collectives forever."""
    model_path, card_path = out / f"{model}.keras", out / f"{model}.json"
    finished = model_path.is_file() and card_path.is_file()
    if not same_on_every_worker(int(finished)):
        raise ValueError(
            f"{out}: some workers find a finished model here and others do not; give every "
            "worker the same --out on a shared filesystem"
        )
    if finished and not overwrite:
        raise FinishedModelError(
            f"{model_path}: a finished model is already here (card {card_path.name}); choose "
            "another --out, or pass --overwrite to train again and replace it"
        )


def _feed_every_replica(data: SliceDataset | None, replicas: int) -> None:
    """Drop a last batch smaller than the replica count. ``tf.distribute`` splits each batch
    among the replicas, and one left with no rows fails the step ("Incompatible shapes")."""
    if data is None or replicas == 1:
        return
    if data.batch_size < replicas:
        raise ValueError(
            f"batch size {data.batch_size} is smaller than the {replicas} replicas it is split "
            "among; use a batch size of at least the number of replicas"
        )
    if 0 < data.num_slices % data.batch_size < replicas:
        data.drop_remainder = True


def _truncate_log(path: Path, epochs: int) -> None:
    """Keep the CSV header and the rows of the ``epochs`` finished epochs (a stopped run may
    have logged its cut-short epoch, which the resumed run does again)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines[: epochs + 1]))


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


def model_card(
    config: TrainConfig,
    sites: list[str],
    teacher: Path | None,
    history: dict[str, list[float]],
    best_val_dice: float | None,
    seconds: float,
    steps_per_epoch: int,
    optimizer_steps: int,
) -> dict[str, Any]:
    """What a trained model is and how it was made: travels with the ``.keras`` and ONNX."""
    distillation = config.distillation
    return {
        "format": "napari-kdseg model card 1",
        "architecture": config.model,
        "width": config.width,
        "input": {
            "size": config.preprocess.size,
            "channels": config.preprocess.context,
            "layout": "NHWC, channels are neighbouring slices centred on the predicted one",
        },
        "preprocess": config.preprocess.to_json()
        | {"normalisation": "z-score over the whole volume", "labels": "label > 0 is prostate"},
        "class_names": list(CLASS_NAMES),
        "training_sites": sites,
        "teacher": None if teacher is None else str(teacher),
        "losses": (
            {"segmentation": config.segmentation_loss}
            | (
                {name: distillation.lambdas[name] for name in distillation.enabled}
                if teacher is not None
                else {}
            )
        ),
        "metrics": {
            "best_val_dice": best_val_dice,
            "final": {k: float(np.asarray(v[-1])) for k, v in history.items()},
        },
        "training": config.to_json()
        | {
            "seconds": round(seconds, 1),
            "steps_per_epoch": steps_per_epoch,
            "optimizer_steps": optimizer_steps,
        },
        "software": {
            "napari_kdseg": __version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
        },
    }
