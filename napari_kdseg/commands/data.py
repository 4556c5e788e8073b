"""Data commands: ``kdseg info``, ``kdseg phantom`` and ``kdseg preprocess``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from napari_kdseg.commands import EXIT_OK, EXIT_PROBLEMS, Subcommands

if TYPE_CHECKING:
    from napari_kdseg.data.survey import DatasetSurvey


def register(commands: Subcommands) -> None:
    info = commands.add_parser(
        "info", help="sites, cases, shapes, spacings, labels and problems of a dataset"
    )
    info.add_argument("path", type=Path, help="dataset root (folders of sites) or one site folder")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any error is found"
    )
    info.add_argument(
        "--full",
        action="store_true",
        help="read every scan's voxels too, not only its header: finds NaN/Inf voxels and "
        "damaged compressed data (slower)",
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


def _info(args: argparse.Namespace) -> int:
    from napari_kdseg.data.datasets import discover
    from napari_kdseg.data.survey import survey_dataset

    survey = survey_dataset(discover(args.path), full=args.full)
    if args.json:
        print(json.dumps(survey.to_json(), indent=2))
    else:
        print(format_survey(survey))
    return EXIT_PROBLEMS if args.strict and survey.errors else EXIT_OK


def format_survey(survey: DatasetSurvey) -> str:
    """The human-readable ``kdseg info`` report: a table whose columns fit their longest
    entry, then the problems found."""
    from napari_kdseg.commands.console import aligned_table, stdout_console

    total = sum(len(site.cases) for site in survey.sites)
    table = aligned_table(
        "site", "layout", "cases", "slices x rows x cols", "spacing mm (slice, row, col)",
        "labels", text_columns=6,
    )  # fmt: skip
    for site in survey.sites:
        shapes = [c.shape for c in site.cases if c.shape]
        spacings = [c.spacing for c in site.cases if c.spacing]
        values = sorted({v for c in site.cases for v in (c.label_values or [])})
        table.add_row(
            site.name,
            site.layout,
            str(len(site.cases)),
            _range_of(shapes, "{:.0f}", " x "),
            _range_of(spacings, "{:.3g}", ", "),
            str(values) if values else "none",
        )
    console = stdout_console()
    with console.capture() as captured:
        console.print(table)
    lines = [f"Dataset {survey.root}: {len(survey.sites)} site(s), {total} case(s)", ""]
    lines += [line.rstrip() for line in captured.get().rstrip("\n").splitlines()] + [""]
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
