"""Training commands: ``kdseg train`` (a teacher or a student baseline) and ``kdseg distill``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from napari_kdseg.commands import EXIT_OK, EXIT_STOPPED, Subcommands
from napari_kdseg.commands.console import add_event_output_arguments
from napari_kdseg.data.augment import AUGMENTATIONS
from napari_kdseg.distillation import terms
from napari_kdseg.teachers import TAPS, TAPS_PROVENANCE
from napari_kdseg.training.config import DISTILLED_SCANS

if TYPE_CHECKING:
    from napari_kdseg.data.datasets import Dataset
    from napari_kdseg.training.config import TrainConfig
    from napari_kdseg.training.run import RunOptions


def register(commands: Subcommands) -> None:
    train = commands.add_parser(
        "train", help="train a teacher, or a student baseline, on chosen sites"
    )
    _training_arguments(train)
    train.set_defaults(run=_train)

    distill = commands.add_parser(
        "distill",
        help="train a student from a teacher (a trained .keras, or TAPS) with AAM/KMM/LM",
        description="Train a student from a teacher. The training sites may mix scans with "
        "masks and scans without (a folder of DICOM series, say): those without train through "
        "the distillation losses only, and the validation Dice comes from the scans with masks "
        "(where none has one and the teacher's predictions are computed ahead, from the "
        "teacher's masks of held-out scans).",
    )
    _training_arguments(distill)
    distill.add_argument(
        "--teacher",
        required=True,
        metavar="TEACHER",
        help=f"a trained teacher .keras, or '{TAPS}' for TAPS, {TAPS_PROVENANCE}. "
        "TAPS runs once per scan before training (about 30 s a scan on one core), its "
        "predictions are cached; it gives no features, so KMM is off with it",
    )
    distill.add_argument(
        "--precompute-teacher",
        action="store_true",
        help="run a .keras teacher once per scan before training and cache its predictions, "
        "instead of at every step (faster; the teacher then sees the scans un-augmented and "
        "gives no features, so KMM is off). TAPS is always precomputed",
    )
    distill.add_argument(
        "--unlabelled",
        nargs="+",
        type=Path,
        default=[],
        metavar="FOLDER",
        help="more training scans from other folders, used without masks (a folder of DICOM "
        "series, or of scans): every site found there trains through the distillation "
        "losses, beside the dataset's sites; --sites and --exclude do not apply to them",
    )
    distill.add_argument(
        "--teacher-labels",
        action="store_true",
        help="train the scans without a mask on the teacher's masks with the segmentation "
        "loss, and no distillation loss unless --losses names some: the hard-label baseline "
        "that shows what the relation losses add (TAPS, or --precompute-teacher)",
    )
    distill.add_argument(
        "--logits-direction",
        choices=terms.LOGITS_DIRECTIONS,
        default="paper",
        help="LM's divergence: paper, KL(student || teacher) as the paper's eq. 7 (default); "
        "hinton, KL(teacher || student), which keeps learning where no scan has a mask (the "
        "paper's can settle on background everywhere)",
    )
    distill.add_argument(
        "--distil-on",
        choices=DISTILLED_SCANS,
        default="all",
        help="apply the teacher's terms to every scan (default), or only to the scans without "
        "a ground-truth mask (with --teacher-labels, the teacher's masks do not count as one)",
    )
    add_losses_argument(
        distill,
        "+",
        "distillation losses to switch on (default the paper's three; with TAPS or "
        "--precompute-teacher, those that need no teacher features: LM and AAM)",
    )
    distill.set_defaults(losses=None)  # None: chosen once the teacher is known
    add_lambdas_argument(distill)
    add_export_argument(distill)
    distill.set_defaults(run=_distill)


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="dataset root or site folder")
    parser.add_argument("--sites", nargs="+", help="training sites (default: all)")
    parser.add_argument("--exclude", nargs="+", default=[], help="sites to leave out (target)")
    parser.add_argument("--model", default=None, help="architecture (default enet)")
    add_config_arguments(parser)
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multi-worker"),
        default="default",
        help="tf.distribute: one device, every local GPU, or machines in TF_CONFIG",
    )
    parser.add_argument(
        "--mixed-precision", action="store_true", help="mixed_float16 (GPUs with tensor cores)"
    )
    parser.add_argument(
        "--tensorboard", action="store_true", help="also write TensorBoard logs to OUT/tensorboard"
    )
    add_progress_argument(parser)
    add_event_output_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train again into an --out that holds a finished model, replacing it",
    )


def add_losses_argument(parser: argparse.ArgumentParser, nargs: str, help_text: str) -> None:
    """``--losses``: the registered distillation terms to switch on."""
    parser.add_argument(
        "--losses",
        nargs=nargs,
        choices=terms.names(),
        default=list(terms.PAPER_TERMS),
        help=help_text,
    )


def add_lambdas_argument(parser: argparse.ArgumentParser) -> None:
    """``--lambdas``: one weight per registered distillation term, in registration order."""
    specs = terms.registered()
    parser.add_argument(
        "--lambdas",
        nargs=len(specs),
        type=float,
        metavar=tuple(spec.short_name for spec in specs),
        help=f"weights of the {', '.join(spec.short_name for spec in specs)} losses (default: "
        "the preset's; the paper's are "
        f"{' '.join(f'{spec.default_weight:g}' for spec in specs)})",
    )


def add_export_argument(parser: argparse.ArgumentParser) -> None:
    """``--export-to``: a model library folder the trained student is exported to (ONNX)."""
    parser.add_argument(
        "--export-to",
        type=Path,
        metavar="LIBRARY",
        help="model library folder: export the trained student there as ONNX, ready for "
        "kdseg segment and the segmentation panel",
    )


def lambdas_from_arguments(args: argparse.Namespace) -> dict[str, float]:
    """``--lambdas`` by term name."""
    return dict(zip(terms.names(), args.lambdas, strict=True))


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress-every",
        type=int,
        default=10,
        metavar="STEPS",
        help="report the running loss every STEPS optimisation steps (a step event with "
        "--json; default 10)",
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The preset and the settings that override it (shared by training and the grids)."""
    parser.add_argument(
        "--preset",
        choices=("paper", "cpu"),
        default="cpu",
        help="paper: full width, 384, 100 epochs; cpu: 96, 6 epochs, full-width students and "
        "quarter-width teachers (default)",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--size", type=int, help="model grid (square)")
    parser.add_argument(
        "--pixel-mm",
        type=float,
        help="in-plane pixel size of the model grid in mm: a square of size x pixel-mm "
        "millimetres centred on each slice, whatever the scanner's field of view (default: "
        "the whole slice resized to the grid, as the paper)",
    )
    parser.add_argument(
        "--intensity",
        choices=("volume", "local"),
        help="volume: z-score over the whole volume (the paper's; default); local: each slice "
        "divided by its local mean first, which flattens a receive coil's falloff (an "
        "endorectal coil's above all)",
    )
    parser.add_argument("--width", type=float, help="channel width multiplier")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        help="standard: flips, rotation, zoom, gamma, noise (nnU-Net's 2D defaults; the "
        "default); scanner-shift: also coil intensity fields, blur and wider zoom and "
        "contrast, for scanners and coils the training scans do not show",
    )
    parser.add_argument("--cache-dir", type=Path)


def config_from_arguments(args: argparse.Namespace, model: str) -> TrainConfig:
    """The chosen preset for ``model`` with the given overrides applied."""
    import dataclasses

    from napari_kdseg.data.augment import AugmentConfig
    from napari_kdseg.training.config import PRESETS

    config = PRESETS[args.preset](model)
    overrides = {
        key: value
        for key, value in {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "width": args.width,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "tensorboard": getattr(args, "tensorboard", False) or None,
        }.items()
        if value is not None
    }
    if args.size is not None:
        overrides["preprocess"] = dataclasses.replace(config.preprocess, size=args.size)
    for name in ("pixel_mm", "intensity"):
        if getattr(args, name) is not None:
            preprocess = overrides.get("preprocess", config.preprocess)
            overrides["preprocess"] = dataclasses.replace(preprocess, **{name: getattr(args, name)})
    if args.augment is not None:
        overrides["augment"] = AugmentConfig.named(args.augment)
    return dataclasses.replace(config, **overrides)


def _train_config(args: argparse.Namespace) -> tuple[TrainConfig, list[str], Dataset]:
    from napari_kdseg.data.datasets import discover

    dataset = discover(args.dataset)
    sites = [s for s in (args.sites or dataset.site_names) if s not in args.exclude]
    for site in sites:
        dataset.site(site)  # an unknown site is named with the list of known ones
    if not sites:
        raise ValueError("no training sites left after --exclude")
    return config_from_arguments(args, args.model or "enet"), sites, dataset


def _train(args: argparse.Namespace) -> int:
    from napari_kdseg.training.run import train

    config, sites, dataset = _train_config(args)
    result = train(dataset, sites, config, args.out, _run_options(args))
    return EXIT_STOPPED if result.stopped else EXIT_OK


def _distill(args: argparse.Namespace) -> int:
    import dataclasses

    from napari_kdseg.data.datasets import with_unlabelled
    from napari_kdseg.training.run import distill

    teacher = _teacher_spec(args.teacher)
    logits_only = teacher == TAPS or args.precompute_teacher
    config, sites, dataset = _train_config(args)
    if args.unlabelled:
        dataset, extra = with_unlabelled(dataset, args.unlabelled)
        sites += extra
    distillation = config.distillation
    if args.lambdas:
        distillation = dataclasses.replace(distillation, lambdas=lambdas_from_arguments(args))
    if args.teacher_labels:
        if not logits_only:
            raise ValueError(
                "--teacher-labels needs the teacher's predictions computed ahead: use "
                f"--teacher {TAPS} or --precompute-teacher"
            )
        if args.lambdas and not args.losses:
            raise ValueError(
                "--teacher-labels trains with the segmentation loss only unless --losses "
                "names distillation losses to add; --lambdas weighs those"
            )
        chosen = _losses(args.losses, teacher, logits_only) if args.losses else []
        distillation = dataclasses.replace(distillation.only(chosen), teacher_labels=True)
    else:
        distillation = distillation.only(_losses(args.losses, teacher, logits_only))
    if args.distil_on != "all" and not distillation.enabled:
        raise ValueError(
            f"--distil-on {args.distil_on} says which scans the distillation losses read, and "
            "none is on: name them with --losses"
        )
    distillation = dataclasses.replace(
        distillation, logits_direction=args.logits_direction, distil_on=args.distil_on
    )
    config = dataclasses.replace(config, distillation=distillation)
    if teacher == TAPS:
        _check_taps_installed()
    result = distill(
        dataset, sites, config, teacher, args.out, _run_options(args),
        precompute=args.precompute_teacher,
    )  # fmt: skip
    if result.stopped:
        return EXIT_STOPPED
    if args.export_to is not None and result.model_path is not None:
        short = terms.short_names()
        terms_used = " + ".join(sorted(short[name] for name in distillation.enabled))
        variant = "+" + terms_used if terms_used else ""
        if distillation.teacher_labels:
            variant = " ".join(part for part in ("teacher labels", variant) if part)
        teacher_name = TAPS if teacher == TAPS else Path(teacher).stem
        fields = {"model": config.model, "variant": variant, "teacher": teacher_name}
        _export_student(result.model_path, args.export_to, args.out, fields)
    return EXIT_OK


def _teacher_spec(given: str) -> str | Path:
    """``taps``, or an existing ``.keras`` file; a ValueError in words otherwise, before
    anything heavy is loaded."""
    if given.lower() == TAPS:
        return TAPS
    path = Path(given).expanduser()
    if path.suffix != ".keras" or not path.is_file():
        raise ValueError(
            f"--teacher {given}: expected an existing .keras teacher written by kdseg train, "
            f"or '{TAPS}'"
        )
    return path


def _check_taps_installed() -> None:
    """TAPS's model file is there, or a ValueError saying how to install it."""
    from napari_kdseg.teachers.taps import TapsNotInstalledError, taps_model_path

    try:
        taps_model_path()
    except TapsNotInstalledError as error:
        raise ValueError(f"--teacher {TAPS}: {error}") from error


def _losses(given: list[str] | None, teacher: str | Path, logits_only: bool) -> list[str]:
    """The distillation terms to switch on: those given, else the paper's (less those that
    read the teacher's features when the teacher gives only its predictions)."""
    if given is None:
        chosen = list(terms.PAPER_TERMS)
        if logits_only:
            chosen = [name for name in chosen if not terms.get(name).needs_teacher_features]
        return chosen
    specs = [terms.get(name) for name in given]
    needing = [spec.short_name for spec in specs if spec.needs_teacher_features]
    if logits_only and needing:
        who = (
            "TAPS gives its predictions only, no features"
            if teacher == TAPS
            else "a precomputed teacher (--precompute-teacher) gives its predictions only, "
            "no features"
        )
        usable = " ".join(
            name for name in terms.names() if not terms.get(name).needs_teacher_features
        )
        raise ValueError(
            f"{' and '.join(needing)} needs the teacher's features, and {who}; leave "
            f"{' and '.join(needing)} out (for example --losses {usable})"
        )
    return given


def _export_student(model_path: Path, library: Path, out: Path, fields: dict[str, str]) -> Path:
    """Export the trained student into ``library`` as ``<out folder name>.onnx`` (a free
    name: nothing there is replaced) and announce it with an ``exported`` event."""
    from napari_kdseg.core.atomic import free_name
    from napari_kdseg.core.events import emit
    from napari_kdseg.export import export_onnx

    library.mkdir(parents=True, exist_ok=True)
    path = free_name(library / f"{out.resolve().name}.onnx")
    report = export_onnx(model_path, path)
    emit("exported", path=str(path), max_abs_difference=report.max_abs_difference, **fields)
    return path


def _run_options(args: argparse.Namespace) -> RunOptions:
    from napari_kdseg.data.cache import PreprocessCache
    from napari_kdseg.training.run import RunOptions

    return RunOptions(
        cache=PreprocessCache(args.cache_dir),
        progress_every=args.progress_every,
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        overwrite=args.overwrite,
    )
