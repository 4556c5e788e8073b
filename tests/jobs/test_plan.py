"""The distillation plan: the ``kdseg loso`` and ``kdseg distill`` command lines, validation
and the site table."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import napari_kdseg
from napari_kdseg.architectures import MODEL_NAMES
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.distillation import terms
from napari_kdseg.jobs.plan import (
    INPUT_MULTIPLES,
    PRESETS,
    TARGET_ROLE,
    TRAINING_ROLE,
    DistillationSettings,
    SiteRole,
    dataset_root_of,
    earlier_run_differences,
    job_argv,
    loso_argv,
    loss_words,
    pinned_settings,
    site_roles,
    validate,
)
from napari_kdseg.training import config as training_config


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = generate_phantom(
        tmp_path_factory.mktemp("phantom"), cases_per_site=2, size=32, sites="ABC"
    )
    # an unlabelled scan in site C: counted as a case, not as a labelled one
    (root / "C" / "Case00_segmentation.nii.gz").rename(root / "C" / "unlabelled_mask.txt")
    return root


def _settings(tmp_path: Path, **changes: object) -> DistillationSettings:
    settings = DistillationSettings(dataset=Path("/data/sites"), target="B", run_folder=tmp_path)
    return dataclasses.replace(settings, **changes)


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse with the real ``kdseg`` parser: the panel's command must be one it accepts."""
    from napari_kdseg.cli import _parser

    assert argv[:3] == [sys.executable, "-m", "napari_kdseg"]
    return _parser().parse_args(argv[3:])


def test_argv_of_the_default_settings(tmp_path: Path) -> None:
    argv = loso_argv(_settings(tmp_path))
    assert argv[3:] == [
        "loso",
        "/data/sites",
        "--targets",
        "B",
        "--students",
        "enet",
        "--out",
        str(tmp_path),
        "--preset",
        "cpu",
        "--progress-every",
        "2",
        "--json",
        "--teachers",
        "unetpp",
        "--losses",
        "logits",
        "kernel_matrix",
        "affinity",
    ]
    args = _parse(argv)
    assert args.command == "loso"
    assert args.json  # the panel parses JSON lines: no progress bars on its pipe
    assert args.lambdas is None  # the preset's weights
    assert args.epochs is None  # the preset decides, with its per-role widths
    assert args.width is None


def test_argv_with_every_option(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.keras"
    settings = _settings(
        tmp_path / "run",
        teacher_file=teacher,
        student="erfnet",
        losses=("logits", "affinity"),
        lambdas=(0.5, 0.9, 1.5),
        preset="paper",
        epochs=2,
        student_epochs=3,
        batch_size=4,
        learning_rate=0.001,
        size=48,
        width=0.25,
        library=tmp_path / "library",
        pixel_mm=0.8,
        intensity="local",
        augment="scanner-shift",
    )
    args = _parse(loso_argv(settings))
    assert args.teacher_file == [teacher]
    assert args.teachers is None
    assert args.students == ["erfnet"]
    assert args.losses == ["logits", "affinity"]
    assert args.lambdas == [0.5, 0.9, 1.5]
    assert (args.preset, args.epochs, args.student_epochs, args.batch_size) == ("paper", 2, 3, 4)
    assert (args.learning_rate, args.size, args.width) == (0.001, 48, 0.25)
    assert args.export_to == tmp_path / "library"
    assert (args.pixel_mm, args.intensity, args.augment) == (0.8, "local", "scanner-shift")
    assert args.out == tmp_path / "run"
    assert args.json


def test_the_defaults_leave_the_advanced_options_to_the_command(tmp_path: Path) -> None:
    for argv in (
        loso_argv(_settings(tmp_path)),
        job_argv(_settings(tmp_path, teacher="taps", losses=("logits",))),
    ):
        args = _parse(argv)
        assert (args.pixel_mm, args.intensity, args.augment) == (None, None, None)
        for option in ("--teacher-labels", "--precompute-teacher", "--logits-direction"):
            assert option not in argv


def test_no_losses_trains_the_students_alone(tmp_path: Path) -> None:
    argv = loso_argv(_settings(tmp_path, losses=()))
    assert "--losses" in argv
    assert _parse(argv).losses == []


def test_site_roles_on_a_phantom(phantom: Path) -> None:
    rows = site_roles(discover(phantom), "C")
    assert rows == [
        SiteRole("A", TRAINING_ROLE, cases=2, labelled=2),
        SiteRole("B", TRAINING_ROLE, cases=2, labelled=2),
        SiteRole("C", TARGET_ROLE, cases=2, labelled=1),
    ]


def test_valid_settings_pass_with_notes(phantom: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path, dataset=phantom, target="C")
    assert validate(settings, discover(phantom)).ok
    no_losses = validate(dataclasses.replace(settings, losses=()), discover(phantom))
    assert no_losses.ok
    assert any("only the student trained alone is" in note for note in no_losses.notes)
    (tmp_path / "grid.json").write_text(json.dumps(pinned_settings(settings)))
    assert any("Start resumes it" in note for note in validate(settings, discover(phantom)).notes)


def test_validation_messages(phantom: Path, tmp_path: Path) -> None:
    dataset = discover(phantom)
    one_site = discover(phantom / "A")

    def errors(dataset: object, **changes: object) -> str:
        settings = _settings(tmp_path, dataset=phantom, **{"target": "C", **changes})
        return " | ".join(validate(settings, dataset).errors)  # type: ignore[arg-type]

    assert "choose a dataset folder" in errors(None)
    assert "leave-one-site-out needs two or more sites" in errors(one_site, target="A")
    assert "target site 'Z' is not in the dataset; sites are A, B, C" in errors(dataset, target="Z")
    assert "not an existing .keras model" in errors(dataset, teacher_file=tmp_path / "t.h5")
    assert "unknown student 'unet'" in errors(dataset, student="unet")
    kmm = loss_words("kernel_matrix")
    assert f"weight of “{kmm}” must be above 0" in errors(dataset, lambdas=(0.2, 0.0, 0.9))
    assert errors(dataset, lambdas=(0.2, 0.0, 0.9), losses=("logits", "affinity")) == ""


def test_dataset_root_from_layer_sources(phantom: Path) -> None:
    case = phantom / "A" / "Case00.nii.gz"
    assert dataset_root_of([case, phantom / "B" / "Case01.nii.gz"]) == phantom
    # one site's files: its folder's parent holds the other sites
    assert dataset_root_of([case, phantom / "A" / "Case01_segmentation.nii.gz"]) == phantom
    assert dataset_root_of([]) is None
    assert dataset_root_of([""]) is None


def test_planning_loads_no_keras(tmp_path: Path) -> None:
    """The napari process plans jobs: presets, model names and the settings a run folder
    pins must come without Keras."""
    (tmp_path / "grid.json").write_text("{}")
    code = (
        "import sys; from pathlib import Path; import napari_kdseg.jobs.progress; "
        "from napari_kdseg.jobs.plan import DistillationSettings, earlier_run_differences; "
        f"earlier_run_differences(DistillationSettings(Path('/d'), 'C', Path({str(tmp_path)!r}))); "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert PRESETS["cpu"].teacher_width == 0.25  # the CPU preset's quarter-width teachers
    assert PRESETS["cpu"].student_width == PRESETS["paper"].student_width == 1.0


def test_presets_carry_their_distillation_weights() -> None:
    for name, values in PRESETS.items():
        weights = training_config.PRESETS[name]("enet").distillation.lambdas
        assert values.lambdas == tuple(weights[spec.name] for spec in terms.registered())
    assert PRESETS["paper"].lambdas == (0.2, 0.9, 0.9)  # eq. 8 as published


def test_a_run_from_taps_is_one_distill_job(tmp_path: Path) -> None:
    """TAPS is not trained or scored in the leave-one-site-out grid: the panel distils one
    student from it, on every site but the target plus the unlabelled scans, and exports it."""
    unlabelled = tmp_path / "dicom"
    settings = _settings(
        tmp_path,
        teacher="taps",
        losses=("logits", "affinity"),
        unlabelled=(unlabelled,),
        student_epochs=3,
        size=32,
        library=tmp_path / "library",
    )
    argv = job_argv(settings)
    assert argv[3] == "distill"
    args = _parse(argv)
    assert args.teacher == "taps"
    assert args.exclude == ["B"]
    assert args.model == "enet"
    assert args.unlabelled == [unlabelled]
    assert args.losses == ["logits", "affinity"]
    assert (args.epochs, args.size, args.export_to) == (3, 32, tmp_path / "library")
    assert args.out == tmp_path / "enet-from-taps"
    assert args.json
    # a trained teacher file with unlabelled scans goes the same way; without, through loso
    teacher_file = tmp_path / "unetpp.keras"
    with_file = dataclasses.replace(settings, teacher_file=teacher_file)
    assert _parse(job_argv(with_file)).teacher == str(teacher_file)
    assert job_argv(dataclasses.replace(with_file, unlabelled=()))[3] == "loso"


def test_taps_and_unlabelled_scans_are_validated(phantom: Path, tmp_path: Path) -> None:
    dataset = discover(phantom)
    folder = tmp_path / "dicom"
    folder.mkdir()
    taps = _settings(tmp_path, dataset=phantom, target="C", teacher="taps")
    checked = validate(taps, dataset)
    assert checked.errors == [
        "switch off “Match the teacher's inner features”: it needs the teacher's features, "
        "and TAPS gives its predictions only"
    ]
    without_kmm = dataclasses.replace(taps, losses=("logits", "affinity"), unlabelled=(folder,))
    checked = validate(without_kmm, dataset)
    assert checked.ok
    notes = " | ".join(checked.notes)
    assert "a published prostate model trained on real MRI by its authors (licence: MIT)" in notes
    assert "one student is distilled on every site but C and the unlabelled scans" in notes
    in_run = dataclasses.replace(without_kmm, teacher="unetpp")
    assert "scans without masks need a ready teacher" in " ".join(validate(in_run, dataset).errors)
    missing = dataclasses.replace(without_kmm, unlabelled=(tmp_path / "nowhere",))
    assert "is not a folder" in " ".join(validate(missing, dataset).errors)


def test_an_input_size_the_architectures_cannot_take_is_refused_in_words(
    phantom: Path, tmp_path: Path
) -> None:
    dataset = discover(phantom)
    settings = _settings(tmp_path, dataset=phantom, target="C", size=8)
    assert validate(settings, dataset).errors == [
        "Input size 8: UNet++ needs a multiple of 16, for example 16 or 32"
    ]
    assert validate(dataclasses.replace(settings, size=40), dataset).errors == [
        "Input size 40: UNet++ needs a multiple of 16, for example 32 or 48"
    ]
    assert validate(dataclasses.replace(settings, size=32), dataset).ok
    # DeepLabV3+ and the students need multiples of 8; TAPS is not built at this size
    assert validate(dataclasses.replace(settings, teacher="deeplabv3plus", size=40), dataset).ok
    taps = dataclasses.replace(settings, teacher="taps", losses=("logits",), size=12)
    assert validate(taps, dataset).errors == [
        "Input size 12: ENet needs a multiple of 8, for example 8 or 16"
    ]


def test_the_input_multiples_are_the_models_total_strides() -> None:
    """The plan restates each model's ``TOTAL_STRIDE`` (its module imports Keras): read the
    constant from the source so that the two cannot drift apart."""
    models = Path(napari_kdseg.__file__).parent / "models"
    strides = {}
    for name in MODEL_NAMES:
        tree = ast.parse((models / f"{name}.py").read_text())
        (stride,) = [
            node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and [getattr(target, "id", None) for target in node.targets] == ["TOTAL_STRIDE"]
            and isinstance(node.value, ast.Constant)
        ]
        strides[name] = stride
    assert strides == INPUT_MULTIPLES


def test_a_run_folder_made_with_other_settings_is_refused_with_a_free_folder_beside_it(
    phantom: Path, tmp_path: Path
) -> None:
    dataset = discover(phantom)
    run = tmp_path / "run"
    run.mkdir()
    settings = _settings(run, dataset=dataset.root, target="C", epochs=1, size=32)
    (run / "grid.json").write_text(json.dumps(pinned_settings(settings)))
    assert validate(settings, dataset).ok

    changed = dataclasses.replace(settings, epochs=2, size=48)
    checked = validate(changed, dataset)
    assert checked.other_settings == [
        "teacher epochs",
        "teacher input size or preprocessing",
        "student epochs",
        "student input size or preprocessing",
    ]
    assert checked.free_run_folder == tmp_path / "run-2"
    assert checked.errors == [
        f"{run} holds a run made with other settings ({', '.join(checked.other_settings)}); "
        f"choose another run folder, for example {tmp_path / 'run-2'}"
    ]
    # run-2 also holds other settings: run-3; a folder already numbered counts on from its base
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "grid.json").write_text((run / "grid.json").read_text())
    assert validate(changed, dataset).free_run_folder == tmp_path / "run-3"
    numbered = dataclasses.replace(changed, run_folder=tmp_path / "run-2")
    assert validate(numbered, dataset).free_run_folder == tmp_path / "run-3"
    # the loss weights are pinned too; the choice of losses is not (each cell has its own)
    weights = dataclasses.replace(settings, lambdas=(0.5, 0.9, 0.1))
    assert earlier_run_differences(weights) == ["student loss weights"]
    assert earlier_run_differences(dataclasses.replace(settings, losses=("logits",))) == []


#: ``kdseg loso`` up to the point where its grid pinned (or refused) the run folder's
#: settings: ``Grid.run`` is replaced, so nothing trains.
_LOSO_WITHOUT_TRAINING = """
import sys
from napari_kdseg.cli import main
from napari_kdseg.experiments import grid

def settings_accepted(self, cells):
    raise SystemExit(0)

grid.Grid.run = settings_accepted
sys.exit(main(sys.argv[1:]))
"""


def test_the_plan_and_kdseg_loso_agree_on_a_run_folder_made_with_other_settings(
    phantom: Path, tmp_path: Path
) -> None:
    """The plan restates how ``kdseg loso`` pins a folder's settings (its module imports
    Keras): the real command, short of training, accepts what the plan accepts and refuses
    what it refuses."""
    dataset = discover(phantom)
    environment = {**os.environ, "KDSEG_CACHE_DIR": str(tmp_path / "cache")}

    def loso(settings: DistillationSettings) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-c", _LOSO_WITHOUT_TRAINING, *job_argv(settings)[3:]]
        return subprocess.run(
            argv, capture_output=True, text=True, env=environment, timeout=600, check=False
        )

    lambdas = (0.5, 0.9, 0.2)
    settings = _settings(
        tmp_path / "run", dataset=dataset.root, target="C", epochs=1, size=32, lambdas=lambdas
    )
    first = loso(settings)  # the real grid writes grid.json
    assert first.returncode == 0, first.stderr[-2000:]
    assert earlier_run_differences(settings) == []
    assert json.loads((tmp_path / "run" / "grid.json").read_text()) == pinned_settings(settings)
    again = loso(settings)  # the same settings: the command accepts the folder, and resumes
    assert again.returncode == 0, again.stderr[-2000:]

    changed = dataclasses.replace(settings, student_epochs=3, learning_rate=0.002)
    assert earlier_run_differences(changed) == [
        "teacher learning rate",
        "student epochs",
        "student learning rate",
    ]
    refused = loso(changed)
    assert refused.returncode != 0
    assert (
        "(teacher learning_rate, student epochs, student learning_rate differ); "
        "choose another --out"
    ) in refused.stderr


def test_the_advanced_options_of_one_distill_job_reach_its_command(tmp_path: Path) -> None:
    """Learning from the teacher's masks, the way round of prediction matching and how scans
    are prepared and varied, each on the ``kdseg distill`` command line; a teacher file
    learnt from runs ahead of training, and with no loss on, neither --losses nor --lambdas
    is given (the teacher's masks alone train)."""
    settings = _settings(
        tmp_path,
        teacher="taps",
        losses=("logits",),
        lambdas=(1.0, 0.9, 0.1),
        unlabelled=(tmp_path / "dicom",),
        teacher_labels=True,
        logits_direction="hinton",
        distil_unlabelled_only=True,
        pixel_mm=1.0,
        intensity="local",
        augment="scanner-shift",
    )
    args = _parse(job_argv(settings))
    assert args.command == "distill"
    assert args.teacher_labels
    assert args.distil_on == "unlabelled"
    assert not args.precompute_teacher  # TAPS always runs ahead
    assert args.logits_direction == "hinton"
    assert (args.pixel_mm, args.intensity, args.augment) == (1.0, "local", "scanner-shift")
    assert (args.losses, args.lambdas) == (["logits"], [1.0, 0.9, 0.1])

    teacher_file = tmp_path / "unetpp.keras"
    from_file = dataclasses.replace(settings, teacher_file=teacher_file, losses=())
    argv = job_argv(from_file)
    args = _parse(argv)
    assert args.teacher == str(teacher_file)
    assert args.teacher_labels
    assert args.precompute_teacher
    assert "--losses" not in argv
    assert "--lambdas" not in argv
    assert not dataclasses.replace(from_file, teacher_labels=False).precompute_teacher


def test_the_options_of_one_distill_job_are_refused_on_the_grid_and_checked(
    phantom: Path, tmp_path: Path
) -> None:
    dataset = discover(phantom)
    folder = tmp_path / "dicom"
    folder.mkdir()
    teacher_file = tmp_path / "unetpp.keras"
    teacher_file.write_bytes(b"a teacher")

    def errors(**changes: object) -> list[str]:
        settings = _settings(tmp_path / "run", dataset=phantom, target="C", **changes)
        return validate(settings, dataset).errors

    grid_errors = errors(
        teacher_labels=True, logits_direction="hinton", distil_unlabelled_only=True
    )
    assert grid_errors == [
        "learning from the teacher's masks, the direction of prediction matching and "
        "teaching only the scans without masks need a ready teacher (TAPS, or a trained "
        "teacher file with scans without masks): a teacher trained in this run sees scans "
        "with masks only"
    ]
    single = {"teacher_file": teacher_file, "unlabelled": (folder,)}
    assert errors(**single) == []
    # learning from a teacher file's masks runs it ahead: it gives no features then
    assert errors(**single, teacher_labels=True) == [
        "switch off “Match the teacher's inner features”: it needs the teacher's features, "
        "and a teacher file run ahead of training (to learn from its masks) gives its "
        "predictions only"
    ]
    masks_only = {**single, "teacher_labels": True, "losses": ()}
    assert errors(**masks_only) == []
    settings = _settings(tmp_path / "run", dataset=phantom, target="C", **masks_only)
    assert "scans without a mask learn from the teacher's masks as if they were drawn" in (
        validate(settings, dataset).notes
    )
    assert errors(**single, losses=()) == [
        "switch on a way of learning from the teacher, or learning from the teacher's masks "
        "(under Advanced)"
    ]
    assert errors(**masks_only, distil_unlabelled_only=True) == [
        "teaching only the scans without masks needs a way of learning from the teacher switched on"
    ]
    assert errors(pixel_mm=0.0, intensity="coil", augment="wild", **single) == [
        "the pixel size must be above 0 mm (got 0)",
        "unknown brightness normalisation 'coil'; choose volume, local",
        "unknown augmentation 'wild'; choose standard, scanner-shift",
    ]
    assert errors(**single, logits_direction="sideways") == [
        "unknown direction of prediction matching 'sideways'; choose paper, hinton"
    ]


def test_a_run_folder_pins_how_its_scans_were_prepared_and_varied(
    phantom: Path, tmp_path: Path
) -> None:
    dataset = discover(phantom)
    settings = _settings(tmp_path, dataset=dataset.root, target="C", size=32)
    (tmp_path / "grid.json").write_text(json.dumps(pinned_settings(settings)))
    assert earlier_run_differences(settings) == []
    for changes in ({"pixel_mm": 0.8}, {"intensity": "local"}):
        assert earlier_run_differences(dataclasses.replace(settings, **changes)) == [
            "teacher input size or preprocessing",
            "student input size or preprocessing",
        ]
    assert earlier_run_differences(dataclasses.replace(settings, augment="scanner-shift")) == [
        "teacher augmentation",
        "student augmentation",
    ]


#: ``kdseg distill`` up to the point where it would train: ``training.run.distill`` is
#: replaced by one printing what it was given.
_DISTILL_WITHOUT_TRAINING = """
import json
import sys
from napari_kdseg.cli import main
from napari_kdseg.training import run

def settings_accepted(dataset, sites, config, teacher, out, options, precompute=False):
    print(json.dumps({
        "sites": sites,
        "precompute": precompute,
        "teacher_labels": config.distillation.teacher_labels,
        "logits_direction": config.distillation.logits_direction,
        "distil_on": config.distillation.distil_on,
        "losses": config.distillation.enabled,
        "pixel_mm": config.preprocess.pixel_mm,
        "intensity": config.preprocess.intensity,
        "bias_field": config.augment.bias_field_probability,
    }))
    raise SystemExit(0)

run.distill = settings_accepted
sys.exit(main(sys.argv[1:]))
"""


def test_kdseg_distill_takes_the_advanced_options_as_the_plan_gives_them(
    phantom: Path, tmp_path: Path
) -> None:
    """The real command, short of training, accepts the plan's command for a teacher file
    whose masks the scans without masks learn from, and configures what the panel asked."""
    unlabelled = generate_phantom(tmp_path / "unlabelled", cases_per_site=1, size=32, sites="D")
    teacher_file = tmp_path / "unetpp.keras"
    teacher_file.write_bytes(b"read only when training starts")
    settings = _settings(
        tmp_path / "run",
        dataset=phantom,
        target="C",
        teacher_file=teacher_file,
        unlabelled=(unlabelled,),
        losses=("affinity",),
        teacher_labels=True,
        logits_direction="hinton",
        distil_unlabelled_only=True,
        pixel_mm=0.8,
        intensity="local",
        augment="scanner-shift",
        size=32,
    )
    assert validate(settings, discover(phantom)).ok
    environment = {**os.environ, "KDSEG_CACHE_DIR": str(tmp_path / "cache")}
    argv = [sys.executable, "-c", _DISTILL_WITHOUT_TRAINING, *job_argv(settings)[3:]]
    result = subprocess.run(
        argv, capture_output=True, text=True, env=environment, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    given = json.loads(result.stdout.strip().splitlines()[-1])
    assert given == {
        "sites": ["A", "B", "D"],
        "precompute": True,
        "teacher_labels": True,
        "logits_direction": "hinton",
        "distil_on": "unlabelled",
        "losses": ["affinity"],
        "pixel_mm": 0.8,
        "intensity": "local",
        "bias_field": 0.5,
    }
