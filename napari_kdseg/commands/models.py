"""``kdseg models``: parameters and FLOPs of every architecture beside the paper's Table 1."""

from __future__ import annotations

import argparse
import json

from napari_kdseg.commands import EXIT_OK, Subcommands


def register(commands: Subcommands) -> None:
    models = commands.add_parser(
        "models", help="parameters and FLOPs of every architecture beside the paper's Table 1"
    )
    models.add_argument(
        "--size", type=int, default=384, help="square input size in pixels (default 384)"
    )
    models.add_argument("--json", action="store_true", help="print the table as JSON")
    models.set_defaults(run=_models)


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
