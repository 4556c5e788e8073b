"""The ``kdseg`` sub-commands, one module per pipeline stage (as nnU-Net v2 does).

Each module's ``register`` adds its sub-commands; handlers import what they need when they
run, so ``kdseg --help`` and the data commands start quickly and never load TensorFlow.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subcommands = object
