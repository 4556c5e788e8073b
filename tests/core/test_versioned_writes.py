"""Reports are never written over: an unchanged rerun adds nothing, a changed one a new version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from napari_kdseg.core.atomic import current_umask, free_name, versioned_path, versions


def _write(path: Path, text: str) -> Path:
    with versioned_path(path) as written:
        written.tmp.write_text(text)
    return written.path


def test_first_write_lands_on_the_name_with_usual_permissions(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    assert _write(report, "one") == report
    assert report.read_text() == "one"
    assert report.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_same_content_adds_nothing_and_other_content_gets_the_next_name(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    _write(report, "one")
    before = report.stat().st_mtime_ns
    assert _write(report, "one") == report
    assert report.stat().st_mtime_ns == before  # not even rewritten
    assert _write(report, "two") == tmp_path / "report-2.md"
    assert report.read_text() == "one"  # the first version is kept, word for word
    assert _write(report, "two") == tmp_path / "report-2.md"  # found among the versions
    assert _write(report, "one") == report
    assert _write(report, "three") == tmp_path / "report-3.md"
    assert versions(report) == [report, tmp_path / "report-2.md", tmp_path / "report-3.md"]
    assert free_name(report) == tmp_path / "report-4.md"
    assert not list(tmp_path.glob(".*"))  # no temporaries left


def test_a_user_edited_report_is_kept(tmp_path: Path) -> None:
    report = tmp_path / "table2.md"
    _write(report, "generated")
    report.write_text("generated\nmy notes for the paper")
    assert _write(report, "generated") == tmp_path / "table2-2.md"
    assert report.read_text().endswith("my notes for the paper")


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def crash_while_writing() -> None:
        with versioned_path(tmp_path / "results.csv") as written:
            written.tmp.write_text("half")
            raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        crash_while_writing()
    assert os.listdir(tmp_path) == []
