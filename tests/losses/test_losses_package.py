"""The package's public surface and the paper's weights (eq. 8)."""

from __future__ import annotations

import napari_kdseg.losses as losses


def test_paper_lambdas() -> None:
    assert losses.PAPER_LAMBDAS == {"logits": 0.2, "kernel_matrix": 0.9, "affinity": 0.9}


def test_public_names_exist() -> None:
    for name in losses.__all__:
        assert getattr(losses, name) is not None
