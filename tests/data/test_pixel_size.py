"""A model grid of fixed pixel size (``pixel_mm``): the same anatomy is the same number of
pixels whatever the scanner's field of view, and predictions go back to the source grid
where the model grid covered it (background elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_kdseg.card import ModelCard
from napari_kdseg.data.preprocess import (
    Geometry,
    PreprocessConfig,
    prepare_labels,
    prepare_probability,
    prepare_volume,
)
from napari_kdseg.data.volume import Volume

GRID = PreprocessConfig(size=64, context=3, pixel_mm=1.5)


def _disc_scan(pixels: int, spacing_mm: float, radius_mm: float = 20.0) -> tuple[Volume, Volume]:
    """A bright disc of ``radius_mm`` in the middle of ``pixels`` x ``pixels`` slices of
    ``spacing_mm``, with its mask: one body seen with two fields of view."""
    centre = (pixels - 1) / 2
    rows, cols = np.mgrid[:pixels, :pixels]
    inside = np.hypot(rows - centre, cols - centre) * spacing_mm <= radius_mm
    image = np.repeat((1.0 + inside)[None], 4, axis=0).astype(np.float32)
    affine = np.diag([-spacing_mm, -spacing_mm, 3.0, 1.0])  # LPS on disk, read as is
    return Volume(image, affine), Volume(np.repeat(inside[None], 4, 0).astype(np.uint8), affine)


@pytest.mark.parametrize(("pixels", "spacing_mm"), [(128, 1.09), (384, 0.5), (40, 2.0)])
def test_the_same_body_has_the_same_size_on_the_grid_whatever_the_field_of_view(
    pixels: int, spacing_mm: float
) -> None:
    scan, mask = _disc_scan(pixels, spacing_mm)
    image, geometry = prepare_volume(scan, GRID)
    assert image.shape == (4, 64, 64)
    assert geometry.model_spacing[1:] == (1.5, 1.5)
    labels = prepare_labels(mask, GRID)
    # a disc of radius 20 mm is pi 20^2 / 1.5^2 = 558 pixels of 1.5 mm
    assert labels[0].sum() == pytest.approx(np.pi * 20**2 / 1.5**2, rel=0.05)
    # a 40-pixel scan of 2 mm (80 mm) is padded to 96 mm with its darkest value
    if pixels * spacing_mm < 64 * 1.5:
        assert image[0, 0, 0] == pytest.approx(image.min())


@pytest.mark.parametrize(("pixels", "spacing_mm"), [(128, 1.09), (40, 2.0)])
def test_labels_go_back_where_the_grid_covered_the_slice(pixels: int, spacing_mm: float) -> None:
    scan, mask = _disc_scan(pixels, spacing_mm)
    _, geometry = prepare_volume(scan, GRID)
    back = geometry.labels_to_source(prepare_labels(mask, GRID))
    assert back.shape == mask.shape
    overlap = np.sum(back & mask.array) * 2 / (back.sum() + mask.array.sum())
    assert overlap > 0.95
    # beyond the grid's 96 mm (a crop of the 140 mm scan) nothing is foreground
    full = np.ones((4, 64, 64, 2), np.float32) * np.array([0.0, 1.0], np.float32)
    covered = geometry.probabilities_to_source(full)
    side_mm = covered[0].any(axis=0).sum() * spacing_mm
    # (a linear map halves the outermost pixel: up to one source pixel lost on each side)
    assert side_mm == pytest.approx(min(96.0, pixels * spacing_mm), abs=3 * spacing_mm)


def test_teacher_probabilities_follow_the_image_onto_the_grid() -> None:
    scan, mask = _disc_scan(128, 1.09)
    probability = prepare_probability(scan.with_array(mask.array.astype(np.float32)), GRID)
    assert probability.shape == (4, 64, 64)
    np.testing.assert_array_equal(probability >= 0.5, prepare_labels(mask, GRID).astype(bool))


def test_pixel_size_is_recorded_only_when_set() -> None:
    """Configs and geometries without it keep their JSON (and so their cache keys)."""
    assert "pixel_mm" not in PreprocessConfig().to_json()
    assert GRID.to_json()["pixel_mm"] == 1.5
    scan, _ = _disc_scan(40, 2.0)
    _, geometry = prepare_volume(scan, GRID)
    assert Geometry.from_json(geometry.to_json()).pixel_mm == 1.5
    assert "pixel_mm" not in prepare_volume(scan, PreprocessConfig(size=64))[1].to_json()
    with pytest.raises(ValueError, match="pixel_mm must be a positive size in mm, got 0"):
        PreprocessConfig(pixel_mm=0)


def test_a_model_card_carries_the_pixel_size(tmp_path: Path) -> None:
    card = ModelCard(preprocess=GRID, architecture="enet")
    card.write_beside(tmp_path / "enet.keras")
    assert ModelCard.read_beside(tmp_path / "enet.keras").preprocess == GRID
