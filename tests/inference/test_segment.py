"""Whole-volume segmentation maps predictions back onto the scan's own grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_kdseg.card import ModelFileError
from napari_kdseg.data.volume import Volume
from napari_kdseg.evaluation.metrics import dice
from napari_kdseg.inference.loading import load_model
from napari_kdseg.inference.model import SegmentationModel
from napari_kdseg.inference.segment import segment

CARD = {
    "format": "napari-kdseg model card 1",
    "architecture": "enet",
    "preprocess": {"size": 32, "context": 3, "orientation": "LPS"},
    "class_names": ["background", "prostate"],
}


def _threshold_model(card: dict, level: float = 0.5) -> SegmentationModel:
    """A stand-in network: 'prostate' wherever the centre slice is brighter than ``level``."""

    def predict(batch: np.ndarray) -> np.ndarray:
        centre = batch[..., batch.shape[-1] // 2]
        return np.stack([np.zeros_like(centre), 8.0 * (centre - level)], axis=-1)

    return SegmentationModel(Path("threshold.onnx"), card, predict, runtime="numpy")


def _oblique_scan() -> tuple[Volume, np.ndarray]:
    """A bright box in a scan stored with flipped, swapped axes and anisotropic voxels."""
    truth = np.zeros((12, 50, 40), dtype=np.uint8)
    truth[3:9, 12:35, 10:28] = 1
    rng = np.random.default_rng(0)
    scan = (truth * 4.0 + rng.normal(0, 0.3, truth.shape)).astype(np.float32)
    affine = np.array(
        [[0.0, -0.8, 0.0, 20.0], [0.0, 0.0, 0.6, -10.0], [3.0, 0.0, 0.0, 5.0], [0, 0, 0, 1]]
    )
    return Volume(scan, affine), truth


def test_segmentation_lands_on_the_source_grid() -> None:
    scan, truth = _oblique_scan()
    result = segment(scan, _threshold_model(CARD), batch_size=5)
    assert result.labels.shape == scan.shape
    assert result.labels.dtype == np.uint8
    assert dice(result.labels, truth) > 0.9
    assert set(result.seconds) == {"preprocess", "infer", "postprocess", "quality"}
    assert result.quality is not None


def test_flip_tta_of_a_flip_equivariant_model_changes_nothing() -> None:
    scan, _ = _oblique_scan()
    model = _threshold_model(CARD)
    plain = segment(scan, model).labels
    assert np.array_equal(segment(scan, model, tta=True).labels, plain)


def test_largest_component_drops_islands() -> None:
    scan, _truth = _oblique_scan()
    scan.array[10, 2:5, 2:5] = 6.0  # a bright island away from the box
    model = _threshold_model(CARD)
    kept = segment(scan, model).labels
    raw = segment(scan, model, largest_component=False).labels
    assert raw[10, 2:5, 2:5].any()
    assert not kept[10, 2:5, 2:5].any()


def test_keras_model_loads_with_its_card(tmp_path: Path) -> None:
    from napari_kdseg.models import build_model

    network = build_model("enet", (32, 32, 3), 2, 0.125)
    network.save(tmp_path / "enet.keras")
    (tmp_path / "enet.json").write_text(json.dumps(CARD))
    model = load_model(tmp_path / "enet.keras")
    assert model.preprocess.size == 32
    assert model.runtime.startswith("keras/")
    logits = model.predict(np.zeros((3, 32, 32, 3), dtype=np.float32))
    assert logits.shape == (3, 32, 32, 2)
    assert np.all(np.isfinite(logits))
    scan, _ = _oblique_scan()
    assert segment(scan, model).labels.shape == scan.shape


def test_model_without_card_is_named(tmp_path: Path) -> None:
    (tmp_path / "lonely.keras").write_bytes(b"not really")
    with pytest.raises(ModelFileError, match=r"lonely\.keras: no model card beside it"):
        load_model(tmp_path / "lonely.keras")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.keras")
