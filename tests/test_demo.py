"""The end-to-end demo at a tiny size: every stage runs and the report says what happened."""

from __future__ import annotations

from pathlib import Path

from napari_kdseg.demo import DemoSettings, run_demo


def test_demo_writes_an_honest_report(tmp_path: Path) -> None:
    settings = DemoSettings(
        target="C",
        cases_per_site=2,
        phantom_size=48,
        grid_size=32,
        teacher_epochs=1,
        student_epochs=1,
    )
    events: list[str] = []
    report = run_demo(tmp_path, settings, on_event=lambda event, **_: events.append(event))
    text = report.read_text()
    assert "| T2: UNet++ |" in text
    assert "| ENet: w/o |" in text
    assert "| T2: w/ |" in text
    assert "Distillation changed the student's mean Dice on the unseen site by" in text
    assert "| Case00 |" in text
    assert "| **total** |" in text
    assert (tmp_path / "contours.png").read_bytes()[:4] == b"\x89PNG"
    assert events.count("cell_done") == 3
    assert (tmp_path / "enet-distilled.onnx").stat().st_size > 0
    assert "exported to `enet-distilled.onnx`" in text
    assert "max abs logit difference not recorded" not in text
    # Running again reuses every finished stage and trains nothing.
    events.clear()
    run_demo(tmp_path, settings, on_event=lambda event, **_: events.append(event))
    assert "start" not in events
