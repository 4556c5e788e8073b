"""napari sample data: generated phantom cases open as scan + mask layers in millimetres."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_kdseg._sample_data import SAMPLE_SIZE, phantom_site


def test_sample_layers_carry_geometry() -> None:
    (image, image_meta, image_kind), (mask, mask_meta, mask_kind) = phantom_site("E")
    assert (image_kind, mask_kind) == ("image", "labels")
    assert image.shape[1:] == (SAMPLE_SIZE, SAMPLE_SIZE)
    assert mask.shape == image.shape
    assert mask.dtype == np.uint8
    assert mask.max() == 1
    assert image_meta["scale"] == mask_meta["scale"]
    assert image_meta["scale"][0] > image_meta["scale"][1], "slices are thicker than pixels"
    affine = np.asarray(image_meta["metadata"]["kdseg"]["affine"])
    assert np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[::-1] == pytest.approx(image_meta["scale"])
    assert image_meta["name"] == "phantom E/Case00"


def test_sample_module_does_not_import_tensorflow() -> None:
    script = (
        "import sys, napari_kdseg._sample_data as s; s.phantom_site('A'); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
