"""The ``kdseg`` command line as a newcomer runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_kdseg.cli import main

SHAPE = (24, 20, 6)


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for site, spacing in (("A", 0.6), ("B", 0.4)):
        for number in range(2):
            folder = root / site
            folder.mkdir(parents=True, exist_ok=True)
            affine = np.diag([-spacing, -spacing, 3.0, 1.0])
            mask = np.zeros(SHAPE, np.uint8)
            mask[8:16, 6:14, 2:4] = 1
            nib.save(
                nib.Nifti1Image(rng.random(SHAPE).astype(np.float32), affine),
                folder / f"Case{number:02d}.nii.gz",
            )
            nib.save(
                nib.Nifti1Image(mask, affine), folder / f"Case{number:02d}_segmentation.nii.gz"
            )
    return root


def test_info_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path / "data")
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 site(s), 4 case(s)" in out
    assert "6 x 20 x 24" in out  # slices x rows x cols
    assert "3, 0.6, 0.6" in out
    assert "3, 0.4, 0.4" in out
    assert "No problems found." in out


def test_info_json_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path / "data")
    (root / "A" / "Case01_segmentation.nii.gz").unlink()
    assert main(["info", str(root), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in document["sites"]] == ["A", "B"]
    assert document["sites"][0]["cases"][1]["label"] is None
    assert document["problems"][0]["problem"] == "image without mask"
    assert main(["info", str(root), "--strict"]) == 1


def test_bad_path_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "does not exist" in err


def test_preprocess_fills_then_reuses_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _dataset(tmp_path / "data")
    arguments = ["preprocess", str(root), "--size", "32", "--cache-dir", str(tmp_path / "cache")]
    assert main(arguments) == 0
    assert "(0 from cache, 4 prepared)" in capsys.readouterr().out
    assert main([*arguments, "--sites", "B"]) == 0
    assert "(2 from cache, 0 prepared)" in capsys.readouterr().out


def test_info_never_imports_tensorflow(tmp_path: Path) -> None:
    """Data commands stay light: the napari process shares this code."""
    root = _dataset(tmp_path / "data")
    script = (
        "import sys; from napari_kdseg.cli import main; main(['info', sys.argv[1]]); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(root)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_models_table_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--size", "64", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["espnet", "enet", "erfnet", "unetpp", "deeplabv3plus"]
    for row in rows:
        assert set(row) == {"name", "params", "flops", "paper_params", "paper_flops"}
        # Parameters do not depend on the input size; FLOPs scale with it (64 vs the paper's 384).
        assert abs(row["params"] / row["paper_params"] - 1) < 0.10
        assert 0 < row["flops"] < row["paper_flops"] / 20


def test_models_rejects_sizes_the_strides_forbid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--size", "100"]) == 2
    assert "multiples of 8" in capsys.readouterr().err
