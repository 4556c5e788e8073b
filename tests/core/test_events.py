"""Progress events: JSON lines on stdout by default, objects where a caller captures them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_kdseg.core.events import captured, emit, muted, sent_to


def test_events_print_as_flushed_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    emit("step", loss=np.float32(0.5), path=Path("runs/enet"))
    record = json.loads(capsys.readouterr().out)
    assert record["event"] == "step"
    assert record["loss"] == 0.5  # numbers from NumPy or a backend become plain floats
    assert record["path"] == "runs/enet"  # anything else is written as text, never a crash
    assert isinstance(record["time"], float)


def test_captured_events_are_objects_and_print_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with captured() as events:
        emit("cell", target="B")
        with captured() as inner:
            emit("done")
        emit("report")
    assert [e["event"] for e in events] == ["cell", "report"]
    assert [e["event"] for e in inner] == ["done"]
    assert capsys.readouterr().out == ""
    emit("after")  # the previous sink is back
    assert json.loads(capsys.readouterr().out)["event"] == "after"


def test_muted_silences_every_sink() -> None:
    seen: list[str] = []
    with sent_to(lambda record: seen.append(record["event"])):
        with muted():
            emit("hidden")
        with muted(False):
            emit("shown")
    assert seen == ["shown"]
