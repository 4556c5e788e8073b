"""Training runs: a model alone (teacher, or student baseline) and a distilled student.

Both read the chosen sites through the preprocessing cache, hold out a share of each site's
labelled cases for validation, keep the weights with the best validation Dice, stream
JSON-lines progress, log every epoch to CSV, and save the trained student (or teacher) alone
as a ``.keras`` file with a JSON model card beside it.

A distillation also trains on cases without masks (DICOM series folders, scans without a
mask file), through the distillation terms only; a model trained alone refuses a site that
has no masks. Its teacher is a ``.keras`` model run at every step, or a teacher whose
predictions are computed once per scan through the teacher-map cache
(:mod:`napari_kdseg.teachers.maps`) and read from the batch: TAPS (``"taps"``), or the
``.keras`` teacher with ``precompute=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from napari_kdseg import __version__
from napari_kdseg.card import CLASS_NAMES, ModelCard, ModelFileError
from napari_kdseg.core.atomic import atomic_path, remove_stale_temporaries
from napari_kdseg.core.errors import DatasetError, report_data_warnings
from napari_kdseg.core.events import emit, muted
from napari_kdseg.data.cache import PreparedCase, PreprocessCache
from napari_kdseg.data.datasets import Case, Dataset, split_cases
from napari_kdseg.data.provenance import SiteData, site_data
from napari_kdseg.distillation.precomputed import KerasTeacherMaps
from napari_kdseg.distillation.teacher import PrecomputedTeacher, Teacher
from napari_kdseg.inference.quality import summarise_scan, training_statistics
from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.models import build_model
from napari_kdseg.teachers.maps import TAPS, MapTeacher, TeacherMapCache, taps_teacher
from napari_kdseg.training.checkpoint import (
    EpochCheckpoint,
    StopAtStepBoundary,
    StopRequest,
    checkpoint_epochs,
    load_state,
    stop_on_signals,
)
from napari_kdseg.training.config import TrainConfig
from napari_kdseg.training.distiller import DistillationRamp, Distiller
from napari_kdseg.training.distribute import (
    same_on_every_worker,
    strategy_scope,
    worker_output,
    worker_role,
)
from napari_kdseg.training.metrics import ForegroundDice
from napari_kdseg.training.pipeline import SliceDataset
from napari_kdseg.training.progress import JsonLinesProgress
from napari_kdseg.training.schedule import CyclicLearningRate


@dataclass(frozen=True)
class RunResult:
    """What a run left: the model and its card, or ``stopped`` with a resumable checkpoint."""

    model_path: Path | None
    card_path: Path | None
    best_val_dice: float | None
    history: dict[str, list[float]]
    stopped: bool = False


def load_split(
    dataset: Dataset,
    sites: list[str],
    config: TrainConfig,
    cache: PreprocessCache,
    *,
    unlabelled: bool = False,
    validate_unlabelled: bool = False,
) -> tuple[list[PreparedCase], list[PreparedCase]]:
    """Preprocessed (training, validation) cases: ``validation_fraction`` of each site's
    labelled cases held out.

    With ``unlabelled`` (a distillation) the cases without a mask train too, all of them (the
    validation Dice needs masks), and a site may have no labelled case at all; the split of
    the labelled cases is the same either way. With ``validate_unlabelled`` as well (a teacher
    whose masks can stand in for the missing ones), ``validation_fraction`` of each site's
    unlabelled cases are held out too.
    """
    train, validation = [], []
    for site in sites:
        cases = dataset.cases([site])
        extra = [c for c in dataset.cases([site], labelled=False) if c.label is None]
        if not cases and not (unlabelled and extra):
            raise DatasetError(
                dataset.site(site).path,
                f"site {site!r} has no labelled cases to train on"
                + (
                    f" (its {len(extra)} case(s) have no mask: a model trained alone needs "
                    "masks; unlabelled cases can only teach a student through distillation)"
                    if extra
                    else ""
                ),
            )
        kept, held = split_cases(cases, config.validation_fraction, config.seed)
        if unlabelled and validate_unlabelled:
            extra_kept, extra_held = split_cases(extra, config.validation_fraction, config.seed)
            kept, held = kept + extra_kept, held + extra_held
        elif unlabelled:
            kept += extra

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


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; the same for a model trained alone and a distilled student.

    ``cache`` holds the preprocessed cases (default: the user's cache); a ``step`` event goes
    out every ``progress_every`` optimisation steps; ``strategy`` and ``mixed_precision``
    place the run (:mod:`~napari_kdseg.training.distribute`); ``overwrite`` allows replacing a
    finished model in the output folder.
    """

    cache: PreprocessCache | None = None
    progress_every: int = 10
    strategy: str = "default"
    mixed_precision: bool = False
    overwrite: bool = False


def train(
    dataset: Dataset,
    sites: list[str],
    config: TrainConfig,
    out: Path,
    options: RunOptions = RunOptions(),
) -> RunResult:
    """Train ``config.model`` alone on ``sites`` (a teacher, or a student baseline).

    Refuses an ``out`` that already holds a finished model unless ``options.overwrite``.
    """
    with strategy_scope(options.strategy, options.mixed_precision) as replicas:
        _refuse_finished_model(out, config.model, options.overwrite)
        keras.utils.set_random_seed(config.seed)  # before any weight is drawn
        model = _build(config)
        model.compile(
            optimizer=_optimizer(config),
            loss=SegmentationLoss(kind=config.segmentation_loss),
            metrics=[ForegroundDice()],
        )
        return _Run(model, model, dataset, sites, config, out, None, options, replicas).fit()


def distill(
    dataset: Dataset,
    sites: list[str],
    config: TrainConfig,
    teacher_path: Path | str,
    out: Path,
    options: RunOptions = RunOptions(),
    *,
    precompute: bool = False,
) -> RunResult:
    """Train the student ``config.model`` from the teacher ``teacher_path`` (eq. 8).

    ``teacher_path`` is a ``.keras`` teacher, run at every step (or, with ``precompute``,
    once per case on the un-augmented slices, its maps cached and augmented with the
    image), or ``"taps"``: TAPS run once per scan on the source grid, its probability
    brought to the model grid and cached. A precomputed teacher gives logits only, so KMM
    (which reads the teacher's features) must be off. Cases without masks train through the
    distillation terms; validation uses the labelled cases.

    Refuses an ``out`` that already holds a finished model unless ``options.overwrite``.
    """
    with strategy_scope(options.strategy, options.mixed_precision) as replicas:
        _refuse_finished_model(out, config.model, options.overwrite)
        keras.utils.set_random_seed(config.seed)  # before any weight is drawn
        teacher, map_teacher, teacher_model = _teacher(teacher_path, config, precompute)
        if config.distillation.teacher_labels and map_teacher is None:
            raise ValueError(
                "training on the teacher's masks needs its maps computed ahead of training: "
                "use TAPS, or precompute the Keras teacher"
            )
        student = _build(config)
        distiller = Distiller(
            teacher, student, config.distillation, SegmentationLoss(kind=config.segmentation_loss)
        )
        distiller.compile(optimizer=_optimizer(config))
        ramp = config.distillation.ramp_epochs(config.epochs)
        run = _Run(
            distiller,
            student,
            dataset,
            sites,
            config,
            out,
            teacher_path,
            options,
            replicas,
            (DistillationRamp(distiller, ramp),) if ramp else (),
            unlabelled=True,
            map_teacher=map_teacher,
            teacher_model=teacher_model,
        )
        return run.fit()


def _teacher(
    spec: Path | str, config: TrainConfig, precompute: bool
) -> tuple[Teacher | keras.Model, MapTeacher | None, dict[str, Any]]:
    """The Distiller's teacher for ``spec``, what computes its maps for a precomputed one, and
    its description for the model card."""
    shape = (config.preprocess.size, config.preprocess.size, config.preprocess.context)
    if str(spec) == TAPS:
        taps = taps_teacher()
        details = taps.details | {"precomputed": True}
        return PrecomputedTeacher(len(CLASS_NAMES), shape, name=TAPS), taps, details
    model = keras.saving.load_model(spec, compile=False)
    ModelCard(preprocess=config.preprocess).check_input_shape(
        model.input_shape, Path(spec), what="teacher input"
    )
    details = _keras_teacher_details(Path(spec), model, precompute)
    if not precompute:
        return model, None, details
    classes = int(model.output.shape[-1])
    teacher = PrecomputedTeacher(classes, shape, name=f"{model.name}_precomputed")
    return teacher, KerasTeacherMaps(model, spec), details


def _keras_teacher_details(path: Path, model: keras.Model, precompute: bool) -> dict[str, Any]:
    """A ``.keras`` teacher for the card: its architecture (from its own card when it has
    one), where it was trained, its file and the file's hash."""
    try:
        card: ModelCard | None = ModelCard.read_beside(path)
    except ModelFileError:
        card = None  # a teacher trained elsewhere may come without a card
    architecture = (card.architecture if card is not None else None) or model.name
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "blake2b").hexdigest()[:32]
    details: dict[str, Any] = {
        "kind": "keras",
        "description": f"{architecture} (Keras)",
        "architecture": architecture,
        "file": str(path),
        "file_blake2b": digest,
        "precomputed": precompute,
    }
    if card is not None and card.training_data is not None:
        details["training_data"] = [site.to_json() for site in card.training_data]
    return details


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


@dataclass(frozen=True)
class _Resumed:
    """Where a run picks up: epochs already done and the best validation Dice so far."""

    epochs_done: int = 0
    best_val_dice: float | None = None


@dataclass
class _Run:
    """One run, step by step: data, resume, callbacks, ``fit``, then the model and its card.

    ``trainer`` is what ``fit`` optimises (the model itself, or the Distiller); ``network`` is
    what is saved (the student alone). It runs on every worker of a multi-worker run (saves
    are collective); only the chief writes into ``out`` and streams progress, the others write
    into a scratch folder.
    """

    trainer: keras.Model
    network: keras.Model
    dataset: Dataset
    sites: list[str]
    config: TrainConfig
    out: Path
    teacher: Path | str | None
    options: RunOptions
    replicas: int
    extra_callbacks: tuple[keras.callbacks.Callback, ...] = ()
    # A distillation: cases without masks train too (through the distillation terms).
    unlabelled: bool = False
    # A teacher whose predictions are computed ahead of training and carried in the batch.
    map_teacher: MapTeacher | None = None
    # The teacher as the model card describes it.
    teacher_model: dict[str, Any] | None = None
    # Per site, the cases training used (set when the data is read), for the card.
    training_data: tuple[SiteData, ...] = ()
    # Summary of the training scans (set when the data is read), for the card's quality checks.
    training_statistics: dict[str, Any] | None = None
    # No scan has a mask: the validation Dice is agreement with the teacher (set with the data).
    validated_by_teacher: bool = False

    def fit(self) -> RunResult:
        _build_optimizer(self.trainer)
        role = worker_role()
        with worker_output(self.out, role) as target, muted(not role.chief):
            result = self._fit_into(target)
        if role.chief:
            return result
        return dataclasses.replace(result, model_path=None, card_path=None)  # scratch is gone

    @property
    def placement(self) -> dict[str, Any]:
        """How the run is spread over devices; recorded in the card and the start event."""
        placement: dict[str, Any] = {
            "strategy": self.options.strategy,
            "replicas": self.replicas,
            "mixed_precision": self.options.mixed_precision,
        }
        if self.options.strategy == "multi-worker":
            placement["workers"] = worker_role().workers
        return placement

    def _fit_into(self, target: Path) -> RunResult:
        """Resume from ``out``, write into ``target`` (``out`` itself on the chief)."""
        target.mkdir(parents=True, exist_ok=True)
        for folder in (target, target / "resume"):  # a killed run's half-written files
            remove_stale_temporaries(folder)
        keras.utils.set_random_seed(self.config.seed)
        batches, validation = self._slices()
        resumed = self._resume(target)
        request = StopRequest()
        checkpoint = EpochCheckpoint(target / "resume", self._identity())
        checkpoint.best_val_dice = resumed.best_val_dice
        keep_best = (
            _KeepBest(self.network, target / f"{self.config.model}.best.keras", "val_dice")
            if validation is not None
            else None
        )
        if keep_best is not None:
            keep_best.best = resumed.best_val_dice
        # Order matters: the checkpoint is on disk before the "epoch" event announces the epoch.
        callbacks: list[keras.callbacks.Callback] = [
            *self.extra_callbacks,
            *([keep_best] if keep_best is not None else []),
            checkpoint,
            StopAtStepBoundary(request),
            JsonLinesProgress(
                len(batches),
                self.config.epochs,
                every=self.options.progress_every,
                initial_epoch=resumed.epochs_done,
                placement=self.placement,
            ),
            keras.callbacks.CSVLogger(str(target / "log.csv"), append=resumed.epochs_done > 0),
        ]
        if self.config.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(target / "tensorboard")))
        started = time.perf_counter()
        with stop_on_signals(request):
            history = self.trainer.fit(
                batches,
                validation_data=validation,
                epochs=self.config.epochs,
                initial_epoch=resumed.epochs_done,
                callbacks=callbacks,
                verbose=0,
            ).history
        seconds = time.perf_counter() - started
        history = {k: [float(v) for v in vs] for k, vs in history.items()}
        best = max(
            [v for v in (resumed.best_val_dice, keep_best and keep_best.best) if v is not None],
            default=None,
        )
        if request.requested:
            emit(
                "stopped",
                signal=request.signal,
                checkpoint=str(target / "resume"),
                epochs_done=checkpoint_epochs(target / "resume"),
                hint="run the same command again to resume from the last finished epoch",
            )
            return RunResult(None, None, best, history, stopped=True)
        best_weights = keep_best.best_weights if keep_best is not None else None
        return self._finish(target, history, best, best_weights, seconds, len(batches))

    def _slices(self) -> tuple[SliceDataset, SliceDataset | None]:
        """Training batches (shuffled, augmented) and validation batches (every slice)."""
        config = self.config
        cache = self.options.cache or PreprocessCache()
        # Where no scan has a mask, the teacher's masks of held-out scans validate instead.
        self.validated_by_teacher = self.map_teacher is not None and not any(
            self.dataset.cases([site]) for site in self.sites
        )
        train_cases, val_cases = load_split(
            self.dataset,
            self.sites,
            config,
            cache,
            unlabelled=self.unlabelled,
            validate_unlabelled=self.validated_by_teacher,
        )
        if self.teacher_model is not None:
            self.teacher_model = self.teacher_model | _how_the_teacher_taught(
                config, self.validated_by_teacher
            )
        used = [*train_cases, *val_cases]
        # The scans the model learned from (not the validation ones): what the quality report
        # compares a new scan with.
        self.training_statistics = training_statistics(
            [summarise_scan(case.image, case.geometry, case.label) for case in train_cases]
        )
        self.training_data = tuple(
            site_data(
                site,
                self.dataset.site(site).path,
                [case.label is not None for case in used if case.site == site],
            )
            for site in self.sites
        )
        train_maps = val_maps = None
        if self.map_teacher is not None:
            # Validation batches carry the maps too: the Distiller's validation step scores
            # the distillation terms against the same teacher.
            train_maps, val_maps = self._teacher_maps([train_cases, val_cases], cache)
        context = config.preprocess.context
        # A distillation whose terms read the scans without a mask alone: batches say which
        # samples have one.
        flag_ground_truth = self.unlabelled and config.distillation.distil_on == "unlabelled"
        batches = SliceDataset(
            train_cases,
            config.batch_size,
            context,
            augment=config.augment,
            outside_share=config.outside_share,
            seed=config.seed,
            unlabelled=self.unlabelled,
            teacher_maps=train_maps,
            teacher_labels=config.distillation.teacher_labels,
            flag_ground_truth=flag_ground_truth,
        )
        validation = (
            SliceDataset(
                val_cases,
                config.batch_size,
                context,
                slices="all",
                shuffle=False,
                teacher_maps=val_maps,
                teacher_labels=self.validated_by_teacher,
                flag_ground_truth=flag_ground_truth,
            )
            if val_cases
            else None
        )
        for data in (batches, validation):
            _feed_every_replica(data, self.replicas)
        return batches, validation

    def _teacher_maps(
        self, groups: list[list[PreparedCase]], cache: PreprocessCache
    ) -> list[list[Any]]:
        """The map teacher's maps of each group of prepared cases, through the teacher-map
        cache beside ``cache``; announced with a ``stage_done`` event."""
        assert self.map_teacher is not None
        maps = TeacherMapCache.beside(cache)
        started = time.perf_counter()
        read_on_masked = self._maps_read_where_masked()

        def asked(case: PreparedCase) -> bool:
            return read_on_masked or case.label is None

        total, before = sum(asked(case) for group in groups for case in group), 0
        result = []
        for group in groups:
            prepared = [case for case in group if asked(case)]
            cases = [_source_case(self.dataset, case) for case in prepared]

            # A scan takes TAPS half a minute: say which one is done, so nobody waits blind.
            def progress(done: int, _: int, case: Case, before: int = before) -> None:
                emit(
                    "stage_progress",
                    stage="teacher maps",
                    done=before + done,
                    total=total,
                    case=f"{case.site}/{case.id}",
                )

            computed = iter(
                maps.prepare_all(
                    cases, prepared, self.config.preprocess, self.map_teacher, progress
                )
            )
            # A map nothing reads stands in as the scan's own mask: it only has the right shape.
            result.append(
                [
                    next(computed) if asked(case) else np.asarray(case.label, dtype=np.float32)
                    for case in group
                ]
            )
            before += len(prepared)
        emit(
            "stage_done",
            stage="teacher maps",
            path=str(maps.root),
            seconds=round(time.perf_counter() - started, 1),
            computed=maps.misses,
            cached=maps.hits,
        )
        return result

    def _maps_read_where_masked(self) -> bool:
        """Whether anything reads the teacher's map of a scan with a ground-truth mask: the
        distillation losses do unless they read the scans without one alone; the teacher's
        masks replace only missing ones. TAPS takes half a minute a scan, and a phantom's
        dozens of masked scans are not worth asking it about for nothing."""
        distillation = self.config.distillation
        return bool(distillation.enabled) and distillation.distil_on == "all"

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the settings, sites and teacher."""
        teacher = None if self.teacher is None else str(self.teacher)
        identity = {"train": self.config.to_json(), "sites": self.sites, "teacher": teacher}
        if self.map_teacher is not None:  # listed only then, so older checkpoints still match
            identity["teacher_maps"] = self.map_teacher.identity
        return identity

    def _resume(self, target: Path) -> _Resumed:
        """Load the last finished epoch's state from ``out/resume``, if there is one."""
        if not same_on_every_worker(checkpoint_epochs(self.out / "resume")):  # else they hang
            raise ValueError(
                f"{self.out}: the workers found different checkpoints to resume from; give "
                "every worker the same --out on a shared filesystem, or a fresh one"
            )
        state = load_state(
            self.trainer, self.out / "resume", self._identity(), _with_current_settings
        )
        if state is None:
            return _Resumed()
        emit("resumed", epochs_done=state["epochs_done"], checkpoint=str(target / "resume"))
        _truncate_log(target / "log.csv", state["epochs_done"])
        return _Resumed(state["epochs_done"], state["best_val_dice"])

    def _finish(
        self,
        target: Path,
        history: dict[str, list[float]],
        best: float | None,
        best_weights: list[Any] | None,
        seconds: float,
        steps_per_epoch: int,
    ) -> RunResult:
        """Save the network with the best validation weights, and its card; drop the resume
        checkpoint (nothing is left to resume)."""
        # Counted before the best weights come back: for a model trained alone the network is
        # the trainer, and loading a .keras file restores that epoch's optimizer state too.
        steps = int(keras.ops.convert_to_numpy(self.trainer.optimizer.iterations))
        model_path = target / f"{self.config.model}.keras"
        best_path = target / f"{self.config.model}.best.keras"
        if best_weights is not None:
            self.network.set_weights(best_weights)
        elif best_path.exists():  # the best epoch came before a resume
            self.network.load_weights(best_path)  # no new variables: creating them is collective
        with atomic_path(model_path) as tmp:
            self.network.save(tmp)
        software = {
            "napari_kdseg": __version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
        }
        card = ModelCard.for_training(
            self.config, self.sites, self.teacher, history, best, seconds, steps_per_epoch,
            steps, self.placement, software, self.training_data, self.teacher_model,
            self.training_statistics,
        )  # fmt: skip
        card_path = card.write_beside(model_path)
        shutil.rmtree(target / "resume", ignore_errors=True)
        emit("artifact", kind="model", path=str(model_path), card=str(card_path))
        emit("done", best_val_dice=best, seconds=round(seconds, 1), optimizer_steps=steps)
        return RunResult(model_path, card_path, best, history)


def _how_the_teacher_taught(config: TrainConfig, validated_by_teacher: bool) -> dict[str, str]:
    """For the card: what the scans without a mask learned from, which scans the distillation
    losses read when not all, and what the validation Dice compares with when the teacher
    stood in for missing masks."""
    details = {}
    distillation = config.distillation
    if distillation.teacher_labels:
        details["labels"] = "the teacher's masks of the scans without one, " + (
            "with the segmentation loss beside the distillation losses"
            if distillation.enabled
            else "with the segmentation loss only"
        )
    if distillation.distil_on == "unlabelled":
        details["distillation_losses"] = (
            "applied only to the scans without a ground-truth mask; the scans with one learned "
            "from their own mask alone"
        )
    if validated_by_teacher:
        details["validation"] = (
            "agreement (Dice) with the teacher's masks of held-out scans: no scan had a mask"
        )
    return details


def _source_case(dataset: Dataset, prepared: PreparedCase) -> Case:
    """The discovered case a prepared case came from (its scan is what a teacher reads)."""
    for case in dataset.site(prepared.site).cases:
        if case.id == prepared.id:
            return case
    raise DatasetError(dataset.site(prepared.site).path, f"no case {prepared.id!r} in this site")


def _build_optimizer(trainer: keras.Model) -> None:
    """Create the optimizer's slots eagerly, before ``fit`` traces its first step.

    Keras 3 on TensorFlow otherwise creates them inside the traced step, which then traces
    twice: measured, this halves the first epoch (ENet 40 s to 21 s at 32 x 32 on 2 cores).
    """
    trainer.optimizer.build(trainer.trainable_variables)


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


def _with_current_settings(identity: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint identity with its training settings read back through TrainConfig."""
    try:
        train = TrainConfig.from_json(identity["train"]).to_json()
    except (KeyError, TypeError, ValueError):  # not settings this version can read: no match
        return identity
    return json.loads(json.dumps(identity | {"train": train}))


def _truncate_log(path: Path, epochs: int) -> None:
    """Keep the CSV header and the rows of the ``epochs`` finished epochs (a stopped run may
    have logged its cut-short epoch, which the resumed run does again)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines[: epochs + 1]))
