"""Shared fixtures: the real MRI in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "data" / "real"


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
