"""Training commands: ``kdseg train`` (a teacher or a student baseline) and ``kdseg distill``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from napari_kdseg.commands import EXIT_OK, EXIT_STOPPED, Subcommands
from napari_kdseg.commands.console import add_event_output_arguments
from napari_kdseg.distillation import terms

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
        "distill", help="train a student from a trained teacher (.keras) with AAM/KMM/LM"
    )
    _training_arguments(distill)
    distill.add_argument("--teacher", type=Path, required=True, help="trained teacher .keras")
    add_losses_argument(
        distill, "+", "distillation losses to switch on (default the paper's three)"
    )
    add_lambdas_argument(distill)
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
    parser.add_argument("--width", type=float, help="channel width multiplier")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--cache-dir", type=Path)


def config_from_arguments(args: argparse.Namespace, model: str) -> TrainConfig:
    """The chosen preset for ``model`` with the given overrides applied."""
    import dataclasses

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

    from napari_kdseg.training.run import distill

    config, sites, dataset = _train_config(args)
    distillation = config.distillation
    if args.lambdas:
        distillation = dataclasses.replace(distillation, lambdas=lambdas_from_arguments(args))
    distillation = distillation.only(args.losses)
    config = dataclasses.replace(config, distillation=distillation)
    result = distill(dataset, sites, config, args.teacher, args.out, _run_options(args))
    return EXIT_STOPPED if result.stopped else EXIT_OK


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
