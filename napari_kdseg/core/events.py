"""Progress events, the one way every stage reports: one JSON object per line on stdout.

Training, the grids, the demo and the student export all call :func:`emit`; the napari panel
and scripts read the lines from a child process. A library caller that wants the events as
objects wraps its call in :func:`captured` (or :func:`sent_to`). In a multi-worker run only
the chief streams (:func:`muted` on the others).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

Event = dict[str, Any]


def _print_json_line(record: Event) -> None:
    # Flushed at once so a parent process reading the pipe sees progress live.
    print(json.dumps(record, default=_plain), file=sys.stdout, flush=True)


_sink: Callable[[Event], None] = _print_json_line
_muted = False


def emit(event: str, **fields: Any) -> None:
    """Report one event (nothing while :func:`muted`)."""
    if _muted:
        return
    _sink({"event": event, "time": round(time.time(), 3), **fields})


@contextlib.contextmanager
def muted(enabled: bool = True) -> Iterator[None]:
    """Silence :func:`emit` while inside: a multi-worker run streams from its chief only."""
    global _muted
    previous, _muted = _muted, _muted or enabled
    try:
        yield
    finally:
        _muted = previous


@contextlib.contextmanager
def sent_to(sink: Callable[[Event], None]) -> Iterator[None]:
    """Hand the events emitted inside to ``sink`` instead of printing them."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous


@contextlib.contextmanager
def captured() -> Iterator[list[Event]]:
    """Collect the events emitted inside into a list instead of printing them."""
    events: list[Event] = []
    with sent_to(events.append):
        yield events


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
