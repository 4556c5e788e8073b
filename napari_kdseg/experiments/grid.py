"""The paper's experimental grids, leave one site out: Table 2 (every teacher-student pair, each
student without and with distillation) and Table 4 (the ablation of LM, AAM and KMM).

A grid is a list of :class:`Cell` s. A cell trains one model on every site except its target
(a teacher, a student baseline, or a student distilled from the same target's teacher with
some of the losses), then scores it on every case of the target site. Each cell lives in its
own folder and finishes by writing ``result.json`` atomically, so running the same grid again
skips finished cells, resumes an interrupted training from its last epoch, and only evaluates
a cell whose model was saved but not yet scored. ``grid.json`` pins the training settings:
a folder is never silently filled with cells made under different ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_kdseg.card import ModelCard, ModelFileError, card_path_for
from napari_kdseg.core.atomic import atomic_path
from napari_kdseg.core.errors import DatasetError, report_data_warnings
from napari_kdseg.core.events import emit
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import Dataset
from napari_kdseg.distillation import terms
from napari_kdseg.evaluation.evaluate import Evaluation
from napari_kdseg.experiments.pinning import GRID_FILE, differences, pinned_settings, with_defaults
from napari_kdseg.models.registry import MODEL_NAMES, STUDENTS, TEACHERS
from napari_kdseg.training.config import TrainConfig

# The paper's Table 4 rows, in its order.
_TABLE4_LOSSES: tuple[tuple[str, ...], ...] = (
    ("logits",),
    ("affinity",),
    ("kernel_matrix",),
    ("kernel_matrix", "logits"),
    ("affinity", "logits"),
    ("affinity", "kernel_matrix"),
    ("affinity", "kernel_matrix", "logits"),
)


def ablation_losses() -> list[tuple[str, ...]]:
    """The ablation rows: the paper's Table 4, then each combination of the registered terms
    that holds a term registered beside the paper's, smallest first."""
    names = terms.names()
    further = [
        tuple(sorted(combination))
        for size in range(1, len(names) + 1)
        for combination in itertools.combinations(names, size)
        if not set(combination) <= set(terms.PAPER_TERMS)
    ]
    return [*_TABLE4_LOSSES, *further]


def _sorted_short_names(losses: Sequence[str]) -> list[str]:
    short_names = terms.short_names()
    return sorted(short_names[name] for name in losses)


def losses_label(losses: Sequence[str]) -> str:
    """The paper's name for a set of distillation losses, e.g. ``+AAM + KMM + LM``."""
    return "+" + " + ".join(_sorted_short_names(losses))


class GridStopped(Exception):
    """A cell's training was stopped by a signal; running the grid again resumes it."""


@dataclass(frozen=True)
class Cell:
    """One model trained without ``target`` and scored on it.

    ``seed`` None trains with the grid's configured seed (one run per cell); a number makes
    the cell one replicate of several, with its own folder, its teacher trained with the same
    seed.
    """

    target: str
    model: str
    teacher: str | None = None
    losses: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose from {MODEL_NAMES}")
        if self.teacher is not None and self.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {self.teacher!r}; choose from {TEACHERS}")
        if bool(self.teacher) != bool(self.losses):
            raise ValueError("a distilled cell names both its teacher and its losses")

    @property
    def role(self) -> str:
        return "teacher" if self.model in TEACHERS else "student"

    @property
    def variant(self) -> str:
        """``teacher``, ``w/o`` (student alone) or the losses on, e.g. ``+AAM + KMM + LM``."""
        if self.role == "teacher":
            return "teacher"
        return "w/o" if not self.losses else losses_label(self.losses)

    @property
    def folder(self) -> Path:
        base = Path(self.target) if self.seed is None else Path(self.target) / f"seed{self.seed}"
        if self.teacher is None:
            return base / self.model
        short = "-".join(_sorted_short_names(self.losses))
        return base / f"{self.model}-from-{self.teacher}-{short}"

    def teacher_cell(self) -> Cell | None:
        return None if self.teacher is None else Cell(self.target, self.teacher, seed=self.seed)


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    evaluation: dict[str, Any]
    train_seconds: float
    evaluate_seconds: float
    model_path: str

    def to_json(self) -> dict[str, Any]:
        return {
            "cell": dataclasses.asdict(self.cell),
            "evaluation": self.evaluation,
            "train_seconds": self.train_seconds,
            "evaluate_seconds": self.evaluate_seconds,
            "model_path": self.model_path,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        cell = dict(data["cell"])
        cell["losses"] = tuple(cell["losses"])
        return cls(
            Cell(**cell),
            data["evaluation"],
            float(data["train_seconds"]),
            float(data["evaluate_seconds"]),
            str(data["model_path"]),
        )

    def summary(self, metric: str = "dice") -> dict[str, Any]:
        return dict(self.evaluation["overall"][metric])


def loso_cells(
    targets: Sequence[str],
    teachers: Sequence[str],
    students: Sequence[str],
    losses: Sequence[str] = terms.PAPER_TERMS,
    seeds: Sequence[int | None] = (None,),
) -> list[Cell]:
    """Table 2: per target and seed, each teacher, each student alone, each student from each
    teacher with ``losses`` (the paper: all three; none trains the students alone). Teachers
    come first: their students need them."""
    terms.check_names(losses)
    chosen = tuple(name for name in terms.names() if name in losses)
    cells = []
    for target in targets:
        for seed in _unique(seeds):
            cells += [Cell(target, teacher, seed=seed) for teacher in teachers]
            for student in students:
                cells.append(Cell(target, student, seed=seed))
                if chosen:
                    cells += [
                        Cell(target, student, teacher, chosen, seed=seed) for teacher in teachers
                    ]
    return cells


def ablation_cells(
    targets: Sequence[str], teacher: str, student: str, seeds: Sequence[int | None] = (None,)
) -> list[Cell]:
    """Table 4: per target and seed, the teacher, the student alone and the student with every
    loss combination."""
    cells = []
    for target in targets:
        for seed in _unique(seeds):
            cells += [Cell(target, teacher, seed=seed), Cell(target, student, seed=seed)]
            cells += [
                Cell(target, student, teacher, losses, seed=seed) for losses in ablation_losses()
            ]
    return cells


def _unique(seeds: Sequence[int | None]) -> list[int | None]:
    if not seeds:
        raise ValueError("give at least one seed")
    return list(dict.fromkeys(seeds))


def check_models(teachers: Sequence[str], students: Sequence[str]) -> None:
    for name in teachers:
        if name not in TEACHERS:
            raise ValueError(f"{name!r} is not a teacher; teachers are {', '.join(TEACHERS)}")
    for name in students:
        if name not in STUDENTS:
            raise ValueError(f"{name!r} is not a student; students are {', '.join(STUDENTS)}")


def check_targets(dataset: Dataset, targets: Sequence[str]) -> None:
    """Leave-one-site-out needs the target plus at least one other site to train on."""
    if len(dataset.site_names) < 2:
        raise DatasetError(
            dataset.root,
            f"leave-one-site-out needs two or more sites, found {len(dataset.site_names)} "
            f"({', '.join(dataset.site_names) or 'none'}): each target site is scored by a "
            "model trained on the other sites",
        )
    for target in targets:
        dataset.site(target)  # an unknown site is named with the list of known ones


class Grid:
    """Runs cells of one grid folder with one training configuration per role.

    ``teacher`` and ``student`` give every setting except the architecture and the
    distillation losses, which each cell sets (the CPU preset, for one, trains full-width
    students but quarter-width teachers, and students may need more epochs). Both must share
    the preprocessing, since a student learns from its teacher's outputs on the same inputs.
    Training runs in this process; progress goes out through
    :func:`~napari_kdseg.core.events.emit`.
    """

    def __init__(
        self,
        dataset: Dataset,
        out: Path,
        teacher: TrainConfig,
        student: TrainConfig,
        cache: PreprocessCache | None = None,
        teacher_files: Sequence[Path] = (),
        progress_every: int = 10,
    ) -> None:
        if teacher.preprocess != student.preprocess:
            raise ValueError(
                f"teachers and students must share the preprocessing: {teacher.preprocess} "
                f"vs {student.preprocess}"
            )
        self.dataset, self.out = dataset, out
        self.configs = {"teacher": teacher, "student": student}
        self.cache = cache or PreprocessCache()
        self.teacher_files = _trained_teachers(teacher_files, student)
        self.progress_every = progress_every
        self._pin_settings()

    def _pin_settings(self) -> None:
        settings = pinned_settings(self.dataset.root, self.configs, self.teacher_files)
        pinned = self.out / GRID_FILE
        if pinned.exists():
            previous = with_defaults(json.loads(pinned.read_text()), self.configs)
            if previous != settings:
                changed = [
                    key if role is None else f"{role} {key or 'settings'}"
                    for role, key in differences(previous, settings, self.configs)
                ]
                raise ValueError(
                    f"{pinned}: this folder holds cells trained with other settings "
                    f"({', '.join(changed)} differ); choose another --out to compare them"
                )
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(pinned) as tmp:
            tmp.write_text(json.dumps(settings, indent=2))

    def config_for(self, cell: Cell) -> TrainConfig:
        config = self.configs[cell.role]
        distillation = config.distillation.only(cell.losses)
        seed = config.seed if cell.seed is None else cell.seed
        return dataclasses.replace(config, model=cell.model, distillation=distillation, seed=seed)

    def run(self, cells: Sequence[Cell]) -> list[CellResult]:
        """Run ``cells`` in order. SIGTERM or SIGINT while a cell is scored lets it finish
        and raises :class:`GridStopped` before the next (training handles its own stops)."""
        from napari_kdseg.training.checkpoint import StopRequest, stop_on_signals

        results = []
        with stop_on_signals(StopRequest()) as request:
            for number, cell in enumerate(cells, start=1):
                emit(
                    "cell",
                    number=number,
                    cells=len(cells),
                    target=cell.target,
                    model=cell.model,
                    variant=cell.variant,
                    teacher=cell.teacher,
                    seed=cell.seed,
                )
                results.append(self.run_cell(cell))
                if request.requested:
                    raise GridStopped(
                        f"{self.out}: stopped after {cell.folder}; run the same command to go on"
                    )
        return results

    def run_cell(self, cell: Cell) -> CellResult:
        folder = self.out / cell.folder
        result_path = folder / "result.json"
        if result_path.exists():
            result = CellResult.from_json(json.loads(result_path.read_text()))
            emit("cell_done", folder=str(folder), skipped=True, **result.summary())
            return result
        model_path, train_seconds = self._train(cell, folder)
        started = time.perf_counter()
        evaluation = self._evaluate(model_path, cell.target)
        result = CellResult(
            cell,
            evaluation.to_json(),
            train_seconds,
            round(time.perf_counter() - started, 1),
            str(model_path),
        )
        with atomic_path(result_path) as tmp:
            tmp.write_text(json.dumps(result.to_json(), indent=2))
        emit("cell_done", folder=str(folder), skipped=False, **result.summary())
        return result

    def _train(self, cell: Cell, folder: Path) -> tuple[Path, float]:
        """Train the cell's model unless it already finished; returns (model, seconds)."""
        from napari_kdseg.training.run import RunOptions, distill, train

        given = self.teacher_files.get(cell.model) if cell.role == "teacher" else None
        if given is not None:
            return given, ModelCard.read_beside(given).training_seconds
        model_path = folder / f"{cell.model}.keras"
        if model_path.exists() and card_path_for(model_path).exists():
            return model_path, ModelCard.read_beside(model_path).training_seconds
        sites = [site for site in self.dataset.site_names if site != cell.target]
        config = self.config_for(cell)
        teacher = cell.teacher_cell()
        options = RunOptions(self.cache, self.progress_every)
        if teacher is None:
            result = train(self.dataset, sites, config, folder, options)
        else:
            teacher_path = self.teacher_files.get(teacher.model) or (
                self.out / teacher.folder / f"{teacher.model}.keras"
            )
            if not teacher_path.exists():
                raise ValueError(
                    f"{teacher_path}: the teacher of {cell.folder} has not been trained; "
                    "list its cell first"
                )
            result = distill(self.dataset, sites, config, teacher_path, folder, options)
        _release_backend_memory()
        if result.stopped or result.model_path is None:
            raise GridStopped(f"{folder}: training stopped; run the same command to resume")
        return result.model_path, ModelCard.read_beside(result.model_path).training_seconds

    def _evaluate(self, model_path: Path, target: str) -> Evaluation:
        from napari_kdseg.evaluation.evaluate import evaluate_model
        from napari_kdseg.inference.loading import load_model

        model = load_model(model_path)
        with report_data_warnings(lambda message: emit("warning", site=target, message=message)):
            evaluation = evaluate_model(model, self.dataset, [target], self.cache)
        _release_backend_memory()
        return evaluation


def _trained_teachers(paths: Sequence[Path], student: TrainConfig) -> dict[str, Path]:
    """Teachers trained elsewhere, by architecture: each must see the students' inputs."""
    teachers: dict[str, Path] = {}
    for path in paths:
        path = Path(path)
        if path.suffix != ".keras" or not path.is_file():
            raise ModelFileError(path, "expected an existing .keras teacher written by training")
        card = ModelCard.read_beside(path)
        architecture = card.architecture
        if architecture not in TEACHERS:
            raise ModelFileError(
                path, f"its card names {architecture!r}, not a teacher ({', '.join(TEACHERS)})"
            )
        if architecture in teachers:
            raise ModelFileError(
                path, f"a second {architecture} teacher; give one per architecture"
            )
        if card.preprocess != student.preprocess:
            raise ModelFileError(
                path,
                f"the teacher was trained on other inputs ({card.preprocess}) "
                f"than the students' ({student.preprocess}); match --size to its card",
            )
        teachers[architecture] = path
    return teachers


def _release_backend_memory() -> None:
    """Drop the models of a finished cell: a grid trains dozens in one process."""
    import keras

    keras.backend.clear_session()
