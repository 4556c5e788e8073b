"""Stand-ins for ``kdseg loso``: small Python scripts that behave like its child process.

Each script is written into a test's folder and run with this interpreter. They import
nothing of napari-kdseg, so they start in milliseconds.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

#: Streams a cell, a start and many steps; SIGTERM ends it at a "step boundary" with exit 3.
TRAINING = """
import json, signal, sys, time

stop = []
signal.signal(signal.SIGTERM, lambda number, frame: stop.append(number))

def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)

emit("cell", number=1, cells=1, target="C", model="enet", variant="w/o", teacher=None)
emit("start", epochs=1, steps_per_epoch=STEPS, initial_epoch=0, backend="tensorflow",
     device="cpu")
print("a plain line between events", flush=True)
print("some TensorFlow chatter", file=sys.stderr, flush=True)
for step in range(1, STEPS + 1):
    time.sleep(PAUSE)
    emit("step", epoch=1, step=step, steps=STEPS, eta_s=(STEPS - step) * PAUSE, loss=1.0 / step)
    if stop:
        emit("stopped", signal=stop[0], checkpoint="resume/")
        print("kdseg loso: stopped; run the same command to resume", file=sys.stderr)
        sys.exit(3)
emit("epoch", epoch=1, epochs=1, eta_s=0.0, loss=0.1, val_dice=0.5)
emit("cell_done", folder="C/enet", skipped=False, mean=0.5, std=0.1, n=2, undefined=0)
print("| Dice | C |", flush=True)
"""

#: Ignores SIGTERM (a child stuck in a long step): only SIGKILL ends it.
STUBBORN = """
import json, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(json.dumps({"event": "start", "epochs": 1, "steps_per_epoch": 1}), flush=True)
time.sleep(60)
"""

#: Fails like a bad input: a few log lines, the one-line error, exit 2.
BAD_INPUT = """
import sys
print("loading dataset", file=sys.stderr)
print("kdseg loso: /nowhere: folder does not exist", file=sys.stderr)
sys.exit(2)
"""

#: Crashes with an uncaught exception: a traceback on stderr, exit 1.
TRACEBACK = """
import json
print(json.dumps({"event": "cell", "number": 1, "cells": 3}), flush=True)
def train():
    raise RuntimeError("the optimizer exploded")
train()
"""

#: Dies by a signal, as when the kernel's out-of-memory killer picks it.
KILLED = """
import json, os, signal
print(json.dumps({"event": "start", "epochs": 1, "steps_per_epoch": 1}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def script(folder: Path, name: str, source: str, **constants: object) -> list[str]:
    """Write ``source`` (with ``NAME`` constants replaced) to ``folder`` and return its argv."""
    text = textwrap.dedent(source)
    for key, value in constants.items():
        text = text.replace(key, repr(value))
    path = folder / f"{name}.py"
    path.write_text(text)
    return [sys.executable, str(path)]
