"""Resumable training: epoch-boundary checkpoints and a clean stop on SIGTERM or SIGINT.

A run keeps ``resume/`` in its output folder: the trainer's weights (student, KMM adapters,
affinity weights) with the optimizer's state (moments and iteration count, so the cyclic
learning rate continues where it was) and ``state.json`` (epochs done, best validation Dice,
the configuration). Checkpoints are taken at epoch boundaries, written under temporary names
and renamed. A stop request (SIGTERM from the napari panel's Cancel, or Ctrl-C) ends training
at the next step boundary; the run then resumes from the last finished epoch, so the number of
optimisation steps of an interrupted-and-resumed run equals that of an uninterrupted one (the
steps of the unfinished epoch are redone, up to one epoch of work).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras

from napari_kdseg.core.atomic import atomic_path

STATE = "state.json"
WEIGHTS = "trainer.weights.h5"


class StopRequest:
    """Set by a signal handler; read by :class:`StopAtStepBoundary`."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals(request: StopRequest) -> Iterator[StopRequest]:
    """Route SIGTERM and SIGINT to ``request`` while training (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(number: int, _frame: Any) -> None:
        request.signal = number

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class StopAtStepBoundary(keras.callbacks.Callback):
    """Ends ``fit`` after the step during which a stop was requested."""

    def __init__(self, request: StopRequest) -> None:
        super().__init__()
        self.request = request

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.request.requested:
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the trainer's full state to ``folder`` after every epoch that ran every step."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        super().__init__()
        self.folder = folder
        self.config = config
        self.best_val_dice: float | None = None
        self._steps_this_epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._steps_this_epoch = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._steps_this_epoch += 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._steps_this_epoch < self.params["steps"]:
            return  # cut short by a stop: the last complete epoch stays the checkpoint
        value = (logs or {}).get("val_dice")
        if value is not None and (self.best_val_dice is None or value > self.best_val_dice):
            self.best_val_dice = float(value)
        save_state(self.model, self.folder, epoch + 1, self.best_val_dice, self.config)


def save_state(
    trainer: keras.Model,
    folder: Path,
    epochs_done: int,
    best_val_dice: float | None,
    config: dict[str, Any],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS) as tmp:
        trainer.save_weights(tmp)
    state = {"epochs_done": epochs_done, "best_val_dice": best_val_dice, "config": config}
    with atomic_path(folder / STATE) as tmp:
        tmp.write_text(json.dumps(state, indent=2))


def load_state(
    trainer: keras.Model,
    folder: Path,
    config: dict[str, Any],
    normalise: Callable[[dict[str, Any]], dict[str, Any]] = lambda config: config,
) -> dict[str, Any] | None:
    """Restore ``trainer`` from ``folder``; None when there is nothing to resume.

    Refuses a checkpoint made with another configuration: resuming it would silently train a
    different model than the one asked for. ``normalise`` reads a stored configuration back
    through the current settings classes, so a setting added since (at its default) does not
    make an older checkpoint look different.
    """
    state_path = folder / STATE
    if not state_path.exists() or not (folder / WEIGHTS).exists():
        return None
    state = json.loads(state_path.read_text())
    stored = state.get("config")
    asked = normalise(json.loads(json.dumps(config)))  # compare as stored (lists)
    if not isinstance(stored, dict) or json.dumps(normalise(stored)) != json.dumps(asked):
        raise ValueError(
            f"{folder}: holds a checkpoint of a run with another configuration; "
            "use another output folder, or delete it to start over"
        )
    if not trainer.optimizer.built:  # its slots must exist to receive the saved state
        trainer.optimizer.build(trainer.trainable_variables)
    trainer.load_weights(folder / WEIGHTS)
    return state


def checkpoint_epochs(folder: Path) -> int:
    """Epochs recorded in the checkpoint of ``folder`` (0 when there is none)."""
    state = folder / STATE
    return int(json.loads(state.read_text())["epochs_done"]) if state.exists() else 0
