"""The ``kdseg`` command line: every pipeline stage is reachable from here.

Sub-commands import what they need when they run, so ``kdseg --help`` and the data
commands start quickly and never load TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from napari_kdseg import __version__
from napari_kdseg.data.errors import KdsegDataError

if TYPE_CHECKING:
    from napari_kdseg.data.datasets import Dataset
    from napari_kdseg.data.survey import DatasetSurvey
    from napari_kdseg.training.config import TrainConfig

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (KdsegDataError, ValueError) as error:
        # Bad files and bad arguments are the user's to fix: one line, no traceback.
        print(f"kdseg {args.command}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"kdseg {args.command}: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdseg",
        description="Relation-based knowledge distillation for prostate MRI segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"napari-kdseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info", help="sites, cases, shapes, spacings, labels and problems of a dataset"
    )
    info.add_argument("path", type=Path, help="dataset root (folders of sites) or one site folder")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any error is found"
    )
    info.set_defaults(run=_info)

    phantom = commands.add_parser(
        "phantom", help="write the synthetic six-site prostate MRI phantom (SAML layout)"
    )
    phantom.add_argument("out", type=Path, help="output folder (site folders A..F go inside)")
    phantom.add_argument("--cases-per-site", type=int, default=10, metavar="N")
    phantom.add_argument(
        "--size", type=int, default=384, metavar="S", help="in-plane matrix (default 384)"
    )
    phantom.add_argument("--seed", type=int, default=0, metavar="K")
    phantom.add_argument("--sites", default="ABCDEF", help="which sites to write (default ABCDEF)")
    phantom.add_argument(
        "--overwrite", action="store_true", help="replace a phantom made with other parameters"
    )
    phantom.set_defaults(run=_phantom)

    preprocess = commands.add_parser(
        "preprocess",
        help="preprocess every labelled case into the on-disk cache (training reads from it)",
    )
    preprocess.add_argument("path", type=Path, help="dataset root or site folder")
    preprocess.add_argument("--sites", nargs="+", help="only these sites (default all)")
    preprocess.add_argument("--size", type=int, default=384, help="model grid (default 384)")
    preprocess.add_argument(
        "--context", type=int, default=3, help="neighbouring slices per input (default 3)"
    )
    preprocess.add_argument("--cache-dir", type=Path, help="default $KDSEG_CACHE_DIR or ~/.cache")
    preprocess.set_defaults(run=_preprocess)

    models = commands.add_parser(
        "models", help="parameters and FLOPs of every architecture beside the paper's Table 1"
    )
    models.add_argument(
        "--size", type=int, default=384, help="square input size in pixels (default 384)"
    )
    models.add_argument("--json", action="store_true", help="print the table as JSON")
    models.set_defaults(run=_models)

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
    distill.add_argument(
        "--losses",
        nargs="+",
        choices=("logits", "kernel_matrix", "affinity"),
        default=["logits", "kernel_matrix", "affinity"],
        help="distillation losses to switch on (default all three, as the paper)",
    )
    distill.add_argument(
        "--lambdas",
        nargs=3,
        type=float,
        metavar=("LM", "KMM", "AAM"),
        help="weights of the logits, kernel-matrix and affinity losses (default 0.2 0.9 0.9)",
    )
    distill.set_defaults(run=_distill)
    return parser


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="dataset root or site folder")
    parser.add_argument("--sites", nargs="+", help="training sites (default: all)")
    parser.add_argument("--exclude", nargs="+", default=[], help="sites to leave out (target)")
    parser.add_argument("--model", default=None, help="architecture (default enet)")
    parser.add_argument(
        "--preset",
        choices=("paper", "cpu"),
        default="cpu",
        help="paper: full width, 384, 100 epochs; cpu: quarter width, 96, 6 epochs (default)",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--size", type=int, help="model grid (square)")
    parser.add_argument("--width", type=float, help="channel width multiplier")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--cache-dir", type=Path)
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
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def _info(args: argparse.Namespace) -> int:
    from napari_kdseg.data.datasets import discover
    from napari_kdseg.data.survey import survey_dataset

    survey = survey_dataset(discover(args.path))
    if args.json:
        print(json.dumps(survey.to_json(), indent=2))
    else:
        print(format_survey(survey))
    return EXIT_PROBLEMS if args.strict and survey.errors else EXIT_OK


def format_survey(survey: DatasetSurvey) -> str:
    """The human-readable ``kdseg info`` report."""
    total = sum(len(site.cases) for site in survey.sites)
    lines = [f"Dataset {survey.root}: {len(survey.sites)} site(s), {total} case(s)", ""]
    header = f"{'site':<10} {'layout':<10} {'cases':>5}  {'slices x rows x cols':<24} "
    header += f"{'spacing mm (slice, row, col)':<32} labels"
    lines += [header, "-" * len(header)]
    for site in survey.sites:
        shapes = [c.shape for c in site.cases if c.shape]
        spacings = [c.spacing for c in site.cases if c.spacing]
        values = sorted({v for c in site.cases for v in (c.label_values or [])})
        lines.append(
            f"{site.name:<10} {site.layout:<10} {len(site.cases):>5}  "
            f"{_range_of(shapes, '{:.0f}', ' x '):<24} {_range_of(spacings, '{:.3g}', ', '):<32} "
            f"{values}"
        )
    lines.append("")
    if survey.problems:
        lines.append(f"Problems ({len(survey.problems)}):")
        lines += [f"  {problem}" for problem in survey.problems]
    else:
        lines.append("No problems found.")
    return "\n".join(lines)


def _range_of(rows: list[list[float]], fmt: str, sep: str) -> str:
    if not rows:
        return "-"
    columns = list(zip(*rows, strict=False))
    parts = []
    for column in columns:
        low, high = min(column), max(column)
        text = fmt.format(low) if low == high else f"{fmt.format(low)}-{fmt.format(high)}"
        parts.append(text)
    return sep.join(parts)


def _phantom(args: argparse.Namespace) -> int:
    from napari_kdseg.data.phantom import generate_phantom

    started = time.perf_counter()
    out = generate_phantom(
        args.out,
        cases_per_site=args.cases_per_site,
        size=args.size,
        seed=args.seed,
        sites=args.sites,
        overwrite=args.overwrite,
    )
    print(f"phantom ready in {out} ({time.perf_counter() - started:.1f} s)")
    return EXIT_OK


def _preprocess(args: argparse.Namespace) -> int:
    from napari_kdseg.data.cache import PreprocessCache
    from napari_kdseg.data.datasets import discover
    from napari_kdseg.data.preprocess import PreprocessConfig

    dataset = discover(args.path)
    config = PreprocessConfig(size=args.size, context=args.context)
    cache = PreprocessCache(args.cache_dir)
    cases = dataset.cases(args.sites)
    started = time.perf_counter()
    for number, case in enumerate(cases, start=1):
        prepared = cache.prepare(case, config)
        print(f"[{number}/{len(cases)}] {case.site}/{case.id}: {prepared.image.shape}", flush=True)
    print(
        f"{len(cases)} case(s) in {time.perf_counter() - started:.1f} s "
        f"({cache.hits} from cache, {cache.misses} prepared) -> {cache.root}"
    )
    return EXIT_OK


def _train_config(args: argparse.Namespace) -> tuple[TrainConfig, list[str], Dataset]:
    import dataclasses

    from napari_kdseg.data.datasets import discover
    from napari_kdseg.training.config import PRESETS

    dataset = discover(args.dataset)
    sites = [s for s in (args.sites or dataset.site_names) if s not in args.exclude]
    for site in sites:
        dataset.site(site)  # an unknown site is named with the list of known ones
    if not sites:
        raise ValueError("no training sites left after --exclude")
    config = PRESETS[args.preset](args.model or "enet")
    overrides = {
        key: value
        for key, value in {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "width": args.width,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "tensorboard": args.tensorboard or None,
        }.items()
        if value is not None
    }
    if args.size is not None:
        overrides["preprocess"] = dataclasses.replace(config.preprocess, size=args.size)
    return dataclasses.replace(config, **overrides), sites, dataset


def _train(args: argparse.Namespace) -> int:
    from napari_kdseg.data.cache import PreprocessCache
    from napari_kdseg.training.run import train

    config, sites, dataset = _train_config(args)
    result = train(
        dataset,
        sites,
        config,
        args.out,
        PreprocessCache(args.cache_dir),
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
    )
    return EXIT_STOPPED if result.stopped else EXIT_OK


def _distill(args: argparse.Namespace) -> int:
    import dataclasses

    from napari_kdseg.data.cache import PreprocessCache
    from napari_kdseg.training.config import LOSS_NAMES
    from napari_kdseg.training.run import distill

    config, sites, dataset = _train_config(args)
    distillation = config.distillation
    if args.lambdas:
        weights = dict(zip(LOSS_NAMES, args.lambdas, strict=True))
        distillation = dataclasses.replace(distillation, lambdas=weights)
    distillation = distillation.only(args.losses)
    config = dataclasses.replace(config, distillation=distillation)
    result = distill(
        dataset,
        sites,
        config,
        args.teacher,
        args.out,
        PreprocessCache(args.cache_dir),
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
    )
    return EXIT_STOPPED if result.stopped else EXIT_OK


def _models(args: argparse.Namespace) -> int:
    from napari_kdseg.models import model_table
    from napari_kdseg.models.registry import STUDENTS

    rows = model_table(args.size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(
        f"Full width, {args.size} x {args.size} x 1 input, 2 classes. FLOPs are 2 x "
        "multiply-accumulates of convolutions and dense layers (transposed convolutions from "
        "their output size); the paper's Table 1 is at 384 x 384."
    )
    print(f"{'model':<14}{'role':<9}{'params':>12}{'paper':>10}{'GFLOPs':>10}{'paper':>9}")
    for row in rows:
        role = "student" if row["name"] in STUDENTS else "teacher"
        print(
            f"{row['name']:<14}{role:<9}{row['params']:>12,}{row['paper_params'] / 1e6:>9.3f}M"
            f"{row['flops'] / 1e9:>10.2f}{row['paper_flops'] / 1e9:>9.2f}"
        )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
