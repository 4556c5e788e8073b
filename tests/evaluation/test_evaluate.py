"""Case-by-case evaluation: a case whose mask is empty is reported and left out, not scored."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_kdseg.core.errors import DataWarning, report_data_warnings
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.evaluation.evaluate import evaluate_model
from napari_kdseg.inference.model import SegmentationModel

CARD = {
    "format": "napari-kdseg model card 1",
    "architecture": "enet",
    "preprocess": {"size": 32, "context": 3, "orientation": "LPS"},
    "class_names": ["background", "prostate"],
}


def _bright_voxels_model() -> SegmentationModel:
    """A stand-in network: 'prostate' wherever the centre slice is brighter than average."""

    def predict(batch: np.ndarray) -> np.ndarray:
        centre = batch[..., batch.shape[-1] // 2]
        return np.stack([np.zeros_like(centre), 8.0 * (centre - 0.5)], axis=-1)

    return SegmentationModel(Path("bright.onnx"), CARD, predict, runtime="numpy")


def test_a_case_with_an_empty_mask_is_left_out_with_a_warning(tmp_path: Path) -> None:
    data = generate_phantom(tmp_path / "data", cases_per_site=2, size=32, seed=0, sites="AB")
    dataset = discover(data)
    blank = dataset.cases(["A"])[1].label
    stored = nib.load(blank)
    empty = np.zeros(stored.shape, dtype=np.uint8)
    nib.save(nib.Nifti1Image(empty, stored.affine, stored.header), blank)

    cache = PreprocessCache(tmp_path / "cache")
    with pytest.warns(DataWarning, match=rf"{blank.name}: the mask holds no prostate; A/Case01"):
        evaluation = evaluate_model(_bright_voxels_model(), dataset, ["A"], cache)
    assert [(r.site, r.case) for r in evaluation.cases] == [("A", "Case00")]
    assert evaluation.site_summary("A")["dice"]["n"] == 1


def test_data_warnings_become_reports_and_other_warnings_pass_on() -> None:
    reported: list[str] = []
    with warnings.catch_warnings(record=True) as passed:
        warnings.simplefilter("always")
        with report_data_warnings(reported.append):
            warnings.warn(DataWarning("Case03_segmentation.nii.gz: empty"), stacklevel=1)
            warnings.warn(DeprecationWarning("something else"), stacklevel=1)
    assert reported == ["Case03_segmentation.nii.gz: empty"]
    assert [str(w.message) for w in passed] == ["something else"]
