"""Shared fixtures, and the split of the suite into two processes.

TensorFlow and a napari canvas cannot share a process on Linux with Mesa OpenGL: Mesa's
llvmpipe binds to the LLVM symbols TensorFlow exports and crashes, and their LLVM static
destructors abort at exit (ARCHITECTURE.md). The product never mixes them (training runs in
a child process, the viewer infers with ONNX Runtime), and neither does the suite: tests
that use a viewer or ``qtbot`` are marked ``gui`` and run in their own pytest process
(``make test`` runs ``-m "not gui"`` then ``-m gui``). In a run that selects both kinds, the
GUI tests are skipped with that reason; in a GUI run, TensorFlow must never be imported.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "data" / "real"
_GUI_FIXTURES = {"make_napari_viewer", "qtbot", "make_napari_viewer_proxy"}


def pytest_configure(config: pytest.Config) -> None:
    """Keep the suite out of the user's preprocessing cache and model library (and each
    pytest-xdist worker out of the others'); child processes inherit the variables."""
    for variable in ("KDSEG_CACHE_DIR", "KDSEG_MODEL_LIBRARY"):
        if variable not in os.environ:
            folder = tempfile.mkdtemp(prefix=f"{variable.lower()}-")
            os.environ[variable] = folder
            config.add_cleanup(lambda folder=folder: shutil.rmtree(folder, ignore_errors=True))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
    # Modules that train start first, so that under pytest-xdist (one module per worker) the
    # longest ones do not begin last while the other workers sit idle.
    training = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in training)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    gui = [item for item in session.items if item.get_closest_marker("gui")]
    if gui and len(gui) < len(session.items):
        reason = (
            "GUI tests run in their own process (pytest tests/gui): TensorFlow and Mesa OpenGL "
            "cannot share one"
        )
        for item in gui:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _gui_process_stays_free_of_tensorflow(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.node.get_closest_marker("gui"):
        assert "tensorflow" not in sys.modules, "the viewer process imported TensorFlow"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real MRI not available: {path} is missing (it lives in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def promise12_case() -> tuple[Path, Path]:
    """PROMISE12 Case00 (endorectal coil) and its whole-gland mask, NIfTI."""
    folder = _require(REAL / "promise12_case00")
    return folder / "Case00.nii.gz", folder / "Case00_segmentation.nii.gz"


@pytest.fixture(scope="session")
def dicom_series() -> list[Path]:
    """Two TCIA Prostate-3T T2 series folders (Siemens 3 T, surface coil), no masks."""
    folder = _require(REAL / "prostate3t_dicom")
    return sorted(p for p in folder.iterdir() if p.is_dir())
