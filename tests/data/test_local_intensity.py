"""``intensity="local"``: each slice divided by its local mean before the z-score, so that a
receive coil's smooth sensitivity falloff cancels while the tissue contrast stays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_kdseg.card import ModelCard
from napari_kdseg.data.preprocess import PreprocessConfig, divide_by_local_mean, prepare_volume
from napari_kdseg.data.volume import Volume


def _tissue(rows: int = 128) -> np.ndarray:
    """Blocks of three intensities, 4 slices of ``rows`` x ``rows``."""
    rng = np.random.default_rng(0)
    blocks = rng.choice([1.0, 2.0, 3.0], size=(8, 8))
    return np.repeat(np.kron(blocks, np.ones((rows // 8, rows // 8)))[None], 4, 0)


def test_a_coil_falloff_cancels_and_the_tissue_contrast_stays() -> None:
    tissue = _tissue()
    rows, cols = np.mgrid[:128, :128]
    falloff = np.exp(-np.hypot(rows - 120, cols - 64) / 40.0)  # bright next to a coil
    with_coil = (tissue * (0.05 + falloff)).astype(np.float32)
    flat = divide_by_local_mean(tissue.astype(np.float32), (1.0, 1.0))
    corrected = divide_by_local_mean(with_coil, (1.0, 1.0))
    assert np.corrcoef(with_coil.ravel(), tissue.ravel())[0, 1] < 0.6
    assert np.corrcoef(corrected.ravel(), flat.ravel())[0, 1] > 0.9


def test_only_the_local_setting_changes_the_input_and_is_recorded(tmp_path: Path) -> None:
    tissue = _tissue(64).astype(np.float32)
    scan = Volume(tissue, np.diag([-0.8, -0.8, 3.0, 1.0]))
    volume_wise, _ = prepare_volume(scan, PreprocessConfig(size=64))
    local_config = PreprocessConfig(size=64, intensity="local")
    local, _ = prepare_volume(scan, local_config)
    assert not np.allclose(volume_wise, local)
    assert local.mean() == pytest.approx(0.0, abs=1e-4)
    assert "intensity" not in PreprocessConfig().to_json()  # older cache keys stay valid
    assert local_config.to_json()["intensity"] == "local"
    card = ModelCard(preprocess=local_config, architecture="enet")
    card.write_beside(tmp_path / "enet.keras")
    read = ModelCard.read_beside(tmp_path / "enet.keras")
    assert read.preprocess == local_config
    with pytest.raises(ValueError, match=r"intensity must be one of \('volume', 'local'\)"):
        PreprocessConfig(intensity="n4")
