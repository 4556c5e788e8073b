"""Cases training cannot use are announced in the progress stream, and none left is an error."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.data.preprocess import PreprocessConfig
from napari_kdseg.training.config import TrainConfig
from napari_kdseg.training.run import load_split

CONFIG = TrainConfig(preprocess=PreprocessConfig(size=16, context=3), validation_fraction=0.0)


def _empty_mask(path: Path) -> None:
    mask = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(mask.shape, np.uint8), mask.affine), path)


def test_an_empty_mask_is_skipped_and_reported_as_an_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = generate_phantom(tmp_path / "data", cases_per_site=2, size=32, seed=0, sites="A")
    _empty_mask(data / "A" / "Case00_segmentation.nii.gz")
    train, _ = load_split(discover(data), ["A"], CONFIG, PreprocessCache(tmp_path / "cache"))
    assert len(train) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["warning"]
    assert events[0]["site"] == "A"
    assert "Case00_segmentation.nii.gz" in events[0]["message"]
    assert "mask is empty" in events[0]["message"]

    _empty_mask(data / "A" / "Case01_segmentation.nii.gz")
    with pytest.raises(DatasetError, match=r"no usable training cases left in sites \['A'\]"):
        load_split(discover(data), ["A"], CONFIG, PreprocessCache(tmp_path / "cache2"))
