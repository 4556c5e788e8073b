"""What the distillation panel asks for, checked, and the ``kdseg`` command that does it.

A teacher trained in the run (or a trained teacher file) goes through ``kdseg loso``: teacher,
student alone and distilled student, each scored on the unseen target site. TAPS, a teacher
trained on real MRI elsewhere, has no place in that grid (it is not trained or scored here),
and ``loso`` takes no scans without masks; so a run from TAPS, or one given a folder of
unlabelled scans, goes through ``kdseg distill`` instead (:func:`distill_argv`): one distilled
student, trained without the target site and exported to the library, where the
segmentation panel or ``kdseg evaluate`` scores it.

Qt-free and Keras-free: the presets come from :mod:`napari_kdseg.training.config`, the
model names from :mod:`napari_kdseg.architectures`, the distillation terms from
:mod:`napari_kdseg.distillation.terms`, the command's options from
:mod:`napari_kdseg.commands.training` and the grids' settings pinning from
:mod:`napari_kdseg.experiments.pinning`, none of which imports Keras.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_kdseg.architectures import DISPLAY_NAMES, STUDENTS, TEACHERS
from napari_kdseg.data.augment import AUGMENTATIONS
from napari_kdseg.data.datasets import Dataset
from napari_kdseg.data.preprocess import INTENSITY_NORMALISATIONS
from napari_kdseg.distillation import terms
from napari_kdseg.experiments import pinning
from napari_kdseg.jobs.child import python_command
from napari_kdseg.teachers import TAPS
from napari_kdseg.training import config as training_config

TRAINING_ROLE = "training: teacher + student"
#: TAPS in the plan, in words; where it comes from (``TAPS_PROVENANCE``) goes in a tooltip.
TAPS_WORDS = "TAPS, a published prostate model trained on real MRI by its authors (licence: MIT)"
TARGET_ROLE = "target (unseen)"
#: Each architecture's total stride: its input height and width must be multiples of it.
#: Restated from ``TOTAL_STRIDE`` in ``napari_kdseg/models/<name>.py``, modules that import
#: Keras (``tests/jobs/test_plan.py`` checks the two agree).
INPUT_MULTIPLES = {"espnet": 8, "enet": 8, "erfnet": 8, "unetpp": 16, "deeplabv3plus": 8}
#: Settings as people name them, by their key in a pinned training configuration.
_SETTING_WORDS = {
    "batch_size": "batch size",
    "learning_rate": "learning rate",
    "preprocess": "input size or preprocessing",
    "distillation": "loss weights",
    "augment": "augmentation",
    "teacher_files": "teacher file",
}
#: The paper's distillation terms in the words the panel shows (their short names, LM, KMM
#: and AAM, go in its tooltips); a term registered later is named by its short name.
LOSS_WORDS = {
    "logits": "Match the teacher's predictions",
    "kernel_matrix": "Match the teacher's inner features",
    "affinity": "Match the teacher's pixel neighbours",
}


def loss_words(name: str) -> str:
    """How the panel names the distillation term ``name``."""
    return LOSS_WORDS.get(name) or terms.get(name).short_name


@dataclass(frozen=True)
class PresetValues:
    """The settings a ``--preset`` gives when nothing overrides them."""

    epochs: int
    batch_size: int
    learning_rate: float
    size: int
    student_width: float
    teacher_width: float
    #: one weight per registered distillation term, in registration order
    lambdas: tuple[float, ...]


def _values(preset: str) -> PresetValues:
    student = training_config.PRESETS[preset]("enet")
    weights = student.distillation.lambdas
    return PresetValues(
        epochs=student.epochs,
        batch_size=student.batch_size,
        learning_rate=student.learning_rate,
        size=student.preprocess.size,
        student_width=student.width,
        teacher_width=training_config.PRESETS[preset]("unetpp").width,
        lambdas=tuple(weights.get(spec.name, spec.default_weight) for spec in terms.registered()),
    )


class _Presets(Mapping[str, PresetValues]):
    """Each preset's values, read when asked, so a term registered later has its weight."""

    def __getitem__(self, name: str) -> PresetValues:
        if name not in training_config.PRESETS:
            raise KeyError(name)
        return _values(name)

    def __iter__(self) -> Iterator[str]:
        return iter(training_config.PRESETS)

    def __len__(self) -> int:
        return len(training_config.PRESETS)


PRESETS: Mapping[str, PresetValues] = _Presets()


@dataclass(frozen=True)
class DistillationSettings:
    """One leave-one-site-out distillation: a teacher and a student, without and with losses.

    ``None`` for a number means the preset's value (``width`` then differs for teachers and
    students, as the CPU preset has it). ``teacher_file`` replaces training the teacher.
    ``lambdas`` has one weight per registered distillation term, in registration order (that
    of ``--lambdas``), ``None`` for the preset's; ``losses`` defaults to the paper's terms.

    ``pixel_mm``, ``intensity`` and ``augment`` are ``--pixel-mm``, ``--intensity`` and
    ``--augment`` (``None``: the command's default, as the paper). ``teacher_labels``,
    ``logits_direction`` and ``distil_unlabelled_only`` (``--teacher-labels``,
    ``--logits-direction``, ``--distil-on unlabelled``) exist for the one ``kdseg distill`` of
    a run from TAPS or with scans without masks only.
    """

    dataset: Path
    target: str
    run_folder: Path
    teacher: str = "unetpp"
    teacher_file: Path | None = None
    student: str = "enet"
    losses: tuple[str, ...] = terms.PAPER_TERMS
    lambdas: tuple[float, ...] | None = None
    preset: str = "cpu"
    epochs: int | None = None
    student_epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    size: int | None = None
    width: float | None = None
    library: Path | None = None
    cache_dir: Path | None = None
    unlabelled: tuple[Path, ...] = ()
    pixel_mm: float | None = None
    intensity: str | None = None
    augment: str | None = None
    teacher_labels: bool = False
    logits_direction: str | None = None
    distil_unlabelled_only: bool = False

    @property
    def preset_values(self) -> PresetValues:
        return PRESETS[self.preset]

    @property
    def from_taps(self) -> bool:
        return self.teacher_file is None and self.teacher == TAPS

    @property
    def single_student(self) -> bool:
        """Whether the run is one ``kdseg distill`` (TAPS, or unlabelled scans) rather than
        the ``kdseg loso`` grid."""
        return self.from_taps or bool(self.unlabelled)

    @property
    def precompute_teacher(self) -> bool:
        """Whether a teacher file runs once per scan ahead of training: learning from its
        masks needs them computed ahead (TAPS always is)."""
        return self.teacher_labels and self.teacher_file is not None and self.single_student

    @property
    def predictions_only(self) -> bool:
        """Whether the teacher gives its predictions only, no features (TAPS, or a teacher
        file computed ahead)."""
        return self.from_taps or self.precompute_teacher


@dataclass(frozen=True)
class SiteRole:
    """One row of the panel's site table."""

    site: str
    role: str
    cases: int
    labelled: int


@dataclass(frozen=True)
class Validation:
    """``errors`` stop a run from starting; ``notes`` tell what it will do.

    When the run folder holds a run made with other settings, ``other_settings`` names them
    and ``free_run_folder`` is the first folder beside it the run can go to instead.
    """

    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    other_settings: list[str] = field(default_factory=list)
    free_run_folder: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


# Steps between progress events: enough points for the panel's loss curve even with the
# few steps per epoch of a small dataset, few enough to keep the pipe quiet.
PROGRESS_EVERY = 2


def job_argv(settings: DistillationSettings) -> list[str]:
    """The command the panel runs for ``settings``: :func:`distill_argv` for a run from TAPS
    or with unlabelled scans, :func:`loso_argv` otherwise."""
    return distill_argv(settings) if settings.single_student else loso_argv(settings)


def distill_argv(settings: DistillationSettings) -> list[str]:
    """``python -m napari_kdseg distill ...``: the student distilled from TAPS (or a teacher
    file) on every site but the target, plus the unlabelled folders, exported to the library."""
    teacher = TAPS if settings.from_taps else str(settings.teacher_file)
    argv = python_command(
        "distill",
        str(settings.dataset),
        "--exclude",
        settings.target,
        "--teacher",
        teacher,
        "--model",
        settings.student,
        "--out",
        str(settings.run_folder / f"{settings.student}-from-{Path(teacher).stem}"),
        "--preset",
        settings.preset,
        "--progress-every",
        str(PROGRESS_EVERY),
        "--json",
    )
    if settings.unlabelled:
        argv += ["--unlabelled", *(str(folder) for folder in settings.unlabelled)]
    if settings.teacher_labels:
        argv.append("--teacher-labels")
    if settings.distil_unlabelled_only:
        argv += ["--distil-on", "unlabelled"]
    if settings.precompute_teacher:
        argv.append("--precompute-teacher")
    # --losses takes one or more; with none, the teacher's masks alone train (and there is
    # nothing for --lambdas to weigh)
    if settings.losses:
        argv += ["--losses", *settings.losses]
        if settings.lambdas is not None:
            argv += ["--lambdas", *(f"{weight:g}" for weight in settings.lambdas)]
    options = {
        # one training: the student's
        "--epochs": settings.student_epochs or settings.epochs,
        "--batch-size": settings.batch_size,
        "--learning-rate": settings.learning_rate,
        "--size": settings.size,
        "--width": settings.width,
        "--logits-direction": settings.logits_direction,
        **_preprocessing_options(settings),
        "--export-to": settings.library,
        "--cache-dir": settings.cache_dir,
    }
    return argv + _options_argv(options)


def loso_argv(settings: DistillationSettings) -> list[str]:
    """``python -m napari_kdseg loso ...`` training the teacher (or taking its file), the
    student alone and the student distilled with the chosen losses, scored on the target."""
    argv = python_command(
        "loso",
        str(settings.dataset),
        "--targets",
        settings.target,
        "--students",
        settings.student,
        "--out",
        str(settings.run_folder),
        "--preset",
        settings.preset,
        "--progress-every",
        str(PROGRESS_EVERY),
        "--json",  # the panel reads events, one JSON object per line, not progress bars
    )
    if settings.teacher_file is not None:
        argv += ["--teacher-file", str(settings.teacher_file)]
    else:
        argv += ["--teachers", settings.teacher]
    argv += ["--losses", *settings.losses]
    if settings.lambdas is not None:
        argv += ["--lambdas", *(f"{weight:g}" for weight in settings.lambdas)]
    options = {
        "--epochs": settings.epochs,
        "--student-epochs": settings.student_epochs,
        "--batch-size": settings.batch_size,
        "--learning-rate": settings.learning_rate,
        "--size": settings.size,
        "--width": settings.width,
        **_preprocessing_options(settings),
        "--export-to": settings.library,
        "--cache-dir": settings.cache_dir,
    }
    return argv + _options_argv(options)


def _preprocessing_options(settings: DistillationSettings) -> dict[str, object]:
    """The options both commands take for how scans are prepared and varied in training."""
    return {
        "--pixel-mm": settings.pixel_mm,
        "--intensity": settings.intensity,
        "--augment": settings.augment,
    }


def _options_argv(options: dict[str, object]) -> list[str]:
    """``--option value`` for every option given (floats as written: 0.001, not 0.0010)."""
    argv: list[str] = []
    for option, value in options.items():
        if value is not None:
            argv += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def site_roles(dataset: Dataset, target: str | None) -> list[SiteRole]:
    """Each site with what the run does with it, its case count and labelled case count."""
    return [
        SiteRole(
            site=site.name,
            role=TARGET_ROLE if site.name == target else TRAINING_ROLE,
            cases=len(site.cases),
            labelled=sum(case.label is not None for case in site.cases),
        )
        for site in dataset.sites
    ]


def dataset_root_of(sources: Sequence[str | Path]) -> Path | None:
    """The dataset root behind files read from it: the folder holding their site folders.

    ``sources`` are case files (``ROOT/SITE/Case00.nii.gz``, or ``ROOT/SITE/imagesTr/...``).
    Returns the nearest common folder above the site folders that holds two or more sites,
    else the site folder itself, or None when the files share no folder.
    """
    from napari_kdseg.core.errors import KdsegDataError
    from napari_kdseg.data.datasets import discover

    folders = {Path(source).parent for source in sources if str(source)}
    folders = {f.parent if f.name in ("imagesTr", "labelsTr") else f for f in folders}
    if not folders:
        return None
    common = Path(*_common_parts([folder.parts for folder in folders]))
    if not common.parts or common == Path(common.anchor):
        return None
    found: Path | None = None
    for candidate in (common, common.parent):
        try:
            sites = discover(candidate).site_names
        except (KdsegDataError, OSError):
            continue
        if len(sites) >= 2:
            return candidate
        found = found or candidate
    return found


def _common_parts(parts: list[tuple[str, ...]]) -> list[str]:
    common: list[str] = []
    for names in zip(*parts, strict=False):
        if len(set(names)) != 1:
            break
        common.append(names[0])
    return common


def trained_architectures(settings: DistillationSettings) -> list[str]:
    """The architectures the run builds at its input size: the teacher trained in the run
    (or the one a teacher file's card names) and the student; TAPS has its own grid."""
    models = [settings.student]
    if settings.teacher_file is not None:
        architecture = _architecture_of(settings.teacher_file)
        models[:0] = [architecture] if architecture else []  # unreadable: reported on its own
    elif not settings.from_taps:
        models.insert(0, settings.teacher)
    return models


def size_errors(size: int, models: Sequence[str]) -> list[str]:
    """One sentence for each model that cannot take ``size`` (height and width must be
    multiples of its total stride), with two sizes that suit every model in ``models``."""
    multiples = {model: INPUT_MULTIPLES[model] for model in models if model in INPUT_MULTIPLES}
    common = math.lcm(*multiples.values()) if multiples else 1
    below = size // common * common
    examples = (below, below + common) if below else (common, 2 * common)
    return [
        f"Input size {size}: {DISPLAY_NAMES.get(model, model)} needs a multiple of "
        f"{multiple}, for example {examples[0]} or {examples[1]}"
        for model, multiple in multiples.items()
        if size % multiple
    ]


def validate(settings: DistillationSettings, dataset: Dataset | None) -> Validation:
    """What stops the run from starting, and what it will do, in words a user can act on."""
    errors: list[str] = []
    notes: list[str] = []
    if dataset is None:
        errors.append("choose a dataset folder: a root holding one folder per site")
    elif len(dataset.sites) < 2:
        errors.append(
            "leave-one-site-out needs two or more sites: the student is trained on the other "
            f"sites and scored on the target; found {len(dataset.sites)} "
            f"({', '.join(dataset.site_names) or 'none'})"
        )
    elif settings.target not in dataset.site_names:
        errors.append(
            f"target site {settings.target!r} is not in the dataset; sites are "
            f"{', '.join(dataset.site_names)}"
        )
    else:
        roles = site_roles(dataset, settings.target)
        if not any(row.labelled for row in roles if row.role == TARGET_ROLE):
            errors.append(f"target site {settings.target} has no labelled case to score on")
        if not any(row.labelled for row in roles if row.role == TRAINING_ROLE):
            errors.append("the training sites have no labelled case to train on")
    if settings.teacher_file is not None:
        if settings.teacher_file.suffix != ".keras" or not settings.teacher_file.is_file():
            errors.append(
                f"teacher file {settings.teacher_file} is not an existing .keras model "
                "written by kdseg training"
            )
        else:
            notes.append(
                f"the teacher is taken from {settings.teacher_file.name}; it should not have "
                f"seen site {settings.target}"
            )
    elif settings.from_taps:
        notes.append(f"the teacher is {TAPS_WORDS}")
    elif settings.teacher not in TEACHERS:
        errors.append(f"unknown teacher {settings.teacher!r}; choose {', '.join(TEACHERS)}")
    elif settings.unlabelled:
        errors.append(
            "scans without masks need a ready teacher (TAPS or a trained teacher file): a "
            "teacher trained in this run learns from scans with masks only"
        )
    for folder in settings.unlabelled:
        if not folder.is_dir():
            errors.append(f"unlabelled scans: {folder} is not a folder")
    if settings.single_student:
        notes.append(
            f"one student is distilled on every site but {settings.target or 'the target'}"
            + (" and the unlabelled scans" if settings.unlabelled else "")
            + ", then exported to the model library; score it on the target with the "
            "Segmentation panel or kdseg evaluate"
        )
    errors += _single_student_errors(settings)
    notes += _teacher_labels_notes(settings)
    errors += _preprocessing_errors(settings)
    if settings.student not in STUDENTS:
        errors.append(f"unknown student {settings.student!r}; choose {', '.join(STUDENTS)}")
    if settings.preset not in PRESETS:
        errors.append(f"unknown preset {settings.preset!r}; choose {', '.join(PRESETS)}")
    else:
        size = settings.size or settings.preset_values.size
        errors += size_errors(size, trained_architectures(settings))
    try:
        terms.check_names(settings.losses)
    except ValueError as error:
        errors.append(str(error))
    specs = terms.registered()
    lambdas = settings.lambdas
    if lambdas is None and settings.preset in PRESETS:
        lambdas = settings.preset_values.lambdas
    if lambdas is None:
        pass  # the unknown preset is reported above
    elif len(lambdas) != len(specs):
        errors.append(f"give one weight per loss ({', '.join(s.short_name for s in specs)})")
    else:
        for spec, weight in zip(specs, lambdas, strict=True):
            if weight < 0 or (spec.name in settings.losses and weight == 0):
                errors.append(
                    f"the weight of “{loss_words(spec.name)}” must be above 0 while it is on "
                    f"(got {weight:g}); switch it off instead"
                )
    if not settings.losses and not settings.single_student:
        notes.append(
            "no way of learning from the teacher is on: only the student trained alone is "
            "trained and scored, besides the teacher"
        )
    other_settings: list[str] = []
    free: Path | None = None
    if (
        not errors
        and not settings.single_student
        and (settings.run_folder / pinning.GRID_FILE).is_file()
    ):
        other_settings = earlier_run_differences(settings)
        if other_settings:
            free = free_run_folder(settings)
            errors.append(
                f"{settings.run_folder} holds a run made with other settings "
                f"({', '.join(other_settings)}); choose another run folder, for example {free}"
            )
        else:
            notes.append(
                f"{settings.run_folder} holds an earlier run with these settings: Start "
                "resumes it and skips the finished models"
            )
    return Validation(errors, notes, other_settings, free)


def _single_student_errors(settings: DistillationSettings) -> list[str]:
    """What a run's teacher or kind does not allow: features from a teacher that gives its
    predictions only, and the options of the one ``kdseg distill`` on a ``loso`` run."""
    errors: list[str] = []
    if settings.predictions_only:
        needing = [
            f"“{loss_words(name)}”"
            for name in settings.losses
            if name in terms.names() and terms.get(name).needs_teacher_features
        ]
        who = (
            "TAPS gives its predictions only"
            if settings.from_taps
            else "a teacher file run ahead of training (to learn from its masks) gives its "
            "predictions only"
        )
        if needing:
            errors.append(
                f"switch off {' and '.join(needing)}: it needs the teacher's features, and {who}"
            )
    if settings.single_student:
        if not settings.losses and not settings.teacher_labels:
            errors.append(
                "switch on a way of learning from the teacher, or learning from the teacher's "
                "masks (under Advanced)"
            )
        if not settings.losses and settings.distil_unlabelled_only:
            errors.append(
                "teaching only the scans without masks needs a way of learning from the "
                "teacher switched on"
            )
    else:
        only_distill = [
            words
            for given, words in (
                (settings.teacher_labels, "learning from the teacher's masks"),
                (settings.logits_direction is not None, "the direction of prediction matching"),
                (settings.distil_unlabelled_only, "teaching only the scans without masks"),
            )
            if given
        ]
        if only_distill:
            errors.append(
                f"{in_words(only_distill)} need a ready teacher (TAPS, or a trained teacher "
                "file with scans without masks): a teacher trained in this run sees scans with "
                "masks only"
            )
    if (
        settings.logits_direction is not None
        and settings.logits_direction not in terms.LOGITS_DIRECTIONS
    ):
        errors.append(
            f"unknown direction of prediction matching {settings.logits_direction!r}; choose "
            f"{', '.join(terms.LOGITS_DIRECTIONS)}"
        )
    return errors


def in_words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]]))


def _teacher_labels_notes(settings: DistillationSettings) -> list[str]:
    if not (settings.teacher_labels and settings.single_student):
        return []
    notes = ["scans without a mask learn from the teacher's masks as if they were drawn"]
    if settings.precompute_teacher:
        notes.append("the teacher file runs once per scan before training, to give its masks")
    return notes


def _preprocessing_errors(settings: DistillationSettings) -> list[str]:
    errors: list[str] = []
    if settings.pixel_mm is not None and not settings.pixel_mm > 0:
        errors.append(f"the pixel size must be above 0 mm (got {settings.pixel_mm:g})")
    if settings.intensity is not None and settings.intensity not in INTENSITY_NORMALISATIONS:
        errors.append(
            f"unknown brightness normalisation {settings.intensity!r}; choose "
            f"{', '.join(INTENSITY_NORMALISATIONS)}"
        )
    if settings.augment is not None and settings.augment not in AUGMENTATIONS:
        errors.append(
            f"unknown augmentation {settings.augment!r}; choose {', '.join(AUGMENTATIONS)}"
        )
    return errors


def pinned_settings(settings: DistillationSettings) -> dict[str, Any]:
    """What ``kdseg loso`` run with :func:`loso_argv` pins in the run folder's ``grid.json``.

    The command's options are parsed as ``_run_grid`` (``napari_kdseg/commands/
    evaluation.py``) parses them and pinned with the grids' own
    :func:`~napari_kdseg.experiments.pinning.pinned_settings`; ``tests/jobs/test_plan.py``
    runs the real command to check that the two agree.
    """
    from napari_kdseg.commands.training import (
        add_config_arguments,
        add_lambdas_argument,
        config_from_arguments,
        lambdas_from_arguments,
    )

    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_config_arguments(parser)
    add_lambdas_argument(parser)
    parser.add_argument("--student-epochs", type=int)
    parser.add_argument("--teacher-file", type=Path, nargs="+", default=[])
    args, _ = parser.parse_known_args(loso_argv(settings)[4:])  # after "python -m pkg loso"
    teacher = config_from_arguments(args, "unetpp")
    student = config_from_arguments(args, "enet")
    if args.student_epochs is not None:
        student = dataclasses.replace(student, epochs=args.student_epochs)
    if args.lambdas:
        weights = lambdas_from_arguments(args)
        distillation = dataclasses.replace(student.distillation, lambdas=weights)
        student = dataclasses.replace(student, distillation=distillation)
    configs = {"teacher": teacher, "student": student}
    teacher_files = {_architecture_of(path) or "teacher": path for path in args.teacher_file}
    return pinning.pinned_settings(settings.dataset, configs, teacher_files)


def earlier_run_differences(
    settings: DistillationSettings, now: dict[str, Any] | None = None
) -> list[str]:
    """The settings in which the run pinned in the run folder differs from ``settings``
    (whose pinned form is ``now``, computed when not given), in words (``teacher epochs``,
    ``student input size or preprocessing``); empty when there is no pinned run or it
    matches. Only ``kdseg loso`` pins its settings."""
    path = settings.run_folder / pinning.GRID_FILE
    if settings.single_student or not path.is_file():
        return []
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return ["its settings file cannot be read"]
    if not isinstance(previous, dict):
        return ["its settings file cannot be read"]
    roles = ("teacher", "student")
    # as the command does: a setting added since the folder was made counts at its default
    previous = pinning.with_defaults(previous, roles)
    now = pinned_settings(settings) if now is None else now
    return [
        _SETTING_WORDS.get(key, key)
        if role is None
        else f"{role} {_SETTING_WORDS.get(key, key.replace('_', ' ')) if key else 'settings'}"
        for role, key in pinning.differences(previous, now, roles)
    ]


def free_run_folder(settings: DistillationSettings) -> Path:
    """The first of ``FOLDER-2``, ``FOLDER-3``, ... that holds no run made with other
    settings (``FOLDER`` being the run folder without such a number it already ends in)."""
    folder = settings.run_folder
    numbered = re.fullmatch(r"(.+)-\d+", folder.name)
    if numbered and (folder.with_name(numbered[1]) / pinning.GRID_FILE).is_file():
        folder = folder.with_name(numbered[1])
    now = pinned_settings(settings)  # the same for every candidate folder
    number = 2
    while True:
        candidate = folder.with_name(f"{folder.name}-{number}")
        if not earlier_run_differences(dataclasses.replace(settings, run_folder=candidate), now):
            return candidate
        number += 1


def _architecture_of(teacher_file: Path) -> str | None:
    """The architecture a teacher file's card names, None when it cannot be read."""
    from napari_kdseg.card import ModelCard, ModelFileError

    with contextlib.suppress(ModelFileError, OSError, ValueError):
        return ModelCard.read_beside(teacher_file).architecture
    return None
