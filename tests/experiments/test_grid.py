"""Leave-one-site-out cells and targets; the grid itself runs in tests/test_demo.py, on the
tiny demo's trained grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.experiments.grid import check_targets, loso_cells


def test_one_site_cannot_be_left_out(tmp_path: Path) -> None:
    data = generate_phantom(tmp_path / "one", cases_per_site=1, size=32, seed=0, sites="C")
    with pytest.raises(DatasetError, match="needs two or more sites, found 1 \\(C\\)"):
        check_targets(discover(data), ["C"])


def test_loso_cells_without_losses_train_students_alone() -> None:
    cells = loso_cells(["B"], ["unetpp"], ["enet", "erfnet"], losses=[])
    assert [cell.variant for cell in cells] == ["teacher", "w/o", "w/o"]
    with pytest.raises(ValueError, match="unknown distillation losses"):
        loso_cells(["B"], ["unetpp"], ["enet"], losses=["dice"])
