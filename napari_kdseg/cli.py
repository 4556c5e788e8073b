"""The ``kdseg`` command line: every pipeline stage is reachable from here.

The sub-commands live in :mod:`napari_kdseg.commands`, one module per stage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from napari_kdseg import __version__
from napari_kdseg.commands import (
    EXIT_BAD_INPUT,
    data,
    demo,
    evaluation,
    inference,
    models,
    training,
)
from napari_kdseg.core.errors import KdsegDataError

STAGES = (data, models, training, evaluation, inference, demo)


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
    for stage in STAGES:
        stage.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
