"""The training settings a grid folder pins in ``grid.json``, and how a run's settings differ
from them. Keras-free: the grids (``experiments/grid.py``) pin and check with it, and the
napari panel (``jobs/plan.py``) reads it to propose a free run folder before Start."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from napari_kdseg.training.config import TrainConfig

#: The file in which a grid folder pins its training settings.
GRID_FILE = "grid.json"


def pinned_settings(
    dataset_root: Path | str,
    configs: Mapping[str, TrainConfig],
    teacher_files: Mapping[str, Path | str] | None = None,
) -> dict[str, Any]:
    """The settings a grid over ``dataset_root`` pins: each role's configuration with the
    model left open, and the teachers trained elsewhere (absent when none, so that older grid
    folders still match), as they read back from JSON."""
    settings: dict[str, Any] = {"dataset": str(dataset_root)} | {
        role: dataclasses.replace(config, model="*").to_json() for role, config in configs.items()
    }
    if teacher_files:
        settings["teacher_files"] = {k: str(v) for k, v in teacher_files.items()}
    return json.loads(json.dumps(settings))  # tuples become lists, as when read back


def with_defaults(pinned: dict[str, Any], roles: Iterable[str]) -> dict[str, Any]:
    """Pinned settings read back through :class:`TrainConfig`, so that a setting added since
    the folder was made counts at its default (its cells were trained that way) instead of
    refusing the folder."""
    normalised = dict(pinned)
    for role in roles:
        # unreadable or from a newer version: compared as written, and refused
        with contextlib.suppress(KeyError, TypeError, ValueError):
            normalised[role] = json.loads(json.dumps(TrainConfig.from_json(pinned[role]).to_json()))
    return normalised


def differences(
    previous: dict[str, Any], now: dict[str, Any], roles: Iterable[str]
) -> list[tuple[str | None, str | None]]:
    """Where ``now`` differs from the ``previous`` pinned settings (read through
    :func:`with_defaults`): ``(None, "dataset")`` or ``(None, "teacher_files")``, ``(role,
    setting)``, or ``(role, None)`` for a role whose pinned settings cannot be read."""
    changed: list[tuple[str | None, str | None]] = [
        (None, key) for key in ("dataset", "teacher_files") if previous.get(key) != now.get(key)
    ]
    for role in roles:
        before, after = previous.get(role, {}), now[role]
        if not isinstance(before, dict):
            changed.append((role, None))
            continue
        changed += [
            (role, key)
            for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)
        ]
    return changed
