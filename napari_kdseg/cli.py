"""The ``kdseg`` command line: every pipeline stage is reachable from here.

The sub-commands live in :mod:`napari_kdseg.commands`, one module per stage. Long commands
report through progress events, drawn for people by :mod:`napari_kdseg.commands.console`
(or printed as JSON lines with ``--json``); TensorFlow's own logging is kept quiet unless
``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from napari_kdseg import __version__
from napari_kdseg.commands import (
    EXIT_BAD_INPUT,
    console,
    data,
    demo,
    evaluation,
    inference,
    models,
    training,
)
from napari_kdseg.core.errors import KdsegDataError

STAGES = (data, models, training, evaluation, inference, demo)

#: Commands that always run Keras (``evaluate`` and ``segment`` do only for a ``.keras`` model).
_KERAS_COMMANDS = frozenset({"train", "distill", "loso", "ablate", "demo", "export"})
#: Python loggers and warning sources of the backends, hushed unless ``--verbose``.
_BACKEND_LOGGERS = ("tensorflow", "absl", "keras", "tf2onnx", "jax", "h5py")
_BACKEND_WARNINGS = r"(tensorflow|keras|absl|tf2onnx|jax|google\.protobuf|onnx)(\.|$)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if not args.verbose:
            _quiet_backends(_needs_keras(args))
        if console.streams_events(args):
            with console.human_output():
                return int(args.run(args))
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
    for command in commands.choices.values():
        command.add_argument(
            "--verbose",
            action="store_true",
            help="let TensorFlow, absl and the other backends log as they please",
        )
    return parser


def _needs_keras(args: argparse.Namespace) -> bool:
    if args.command in _KERAS_COMMANDS:
        return True
    model = getattr(args, "model", None)
    return args.command in ("evaluate", "segment") and Path(str(model)).suffix == ".keras"


def _quiet_backends(load_keras: bool) -> None:
    """Keep the backends' log lines (TensorFlow's C++ "Could not find cuda drivers",
    "cuInit" and oneDNN notices, absl's and Python warnings) off the user's screen.

    The environment must be set before TensorFlow is imported. A few of its lines are written
    while it loads, before its logging reads the environment: Keras (and through it the
    backend) is imported here with those lines held back, and shown if the import fails.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore", module=_BACKEND_WARNINGS)
    for name in _BACKEND_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not load_keras:
        return
    if "keras" not in sys.modules:
        with _stderr_held():
            import keras  # noqa: F401  (loads the backend while its start-up noise is held)
    with contextlib.suppress(ImportError):  # absl comes with TensorFlow, not with the others
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """File descriptor 2 (where C++ libraries write) goes to a temporary file while inside;
    what was written there is passed on if the body raises."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
