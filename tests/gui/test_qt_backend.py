"""The viewer runs on Qt 6 (napari deprecated its PyQt5 support): the project depends on
PyQt6 only, and opening a viewer raises no backend deprecation warning."""

from __future__ import annotations

import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.gui  # one process for the viewer tests (tests/conftest.py)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_project_depends_on_pyqt6_not_pyqt5() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    names = {dependency.split(">")[0].split("=")[0].strip() for dependency in dependencies}
    assert "PyQt6" in names
    assert "PyQt5" not in names


def test_the_viewer_opens_on_qt6_without_a_backend_warning(
    make_napari_viewer: Callable[..., Any],
) -> None:
    import qtpy

    assert qtpy.API_NAME == "PyQt6"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_napari_viewer(show=True)
    about_qt = [str(w.message) for w in caught if "qt" in str(w.message).lower()]
    assert not [message for message in about_qt if "deprecat" in message.lower()], about_qt
