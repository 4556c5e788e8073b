"""Teacher maps computed once per scan: on the prepared image's grid voxel for voxel, cached
on content, recipe and teacher; TAPS end to end on one real series (slow)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import Case, discover
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.preprocess import PreprocessConfig, prepare_labels
from napari_kdseg.data.volume import Volume
from napari_kdseg.teachers.maps import SourceGridTeacher, TeacherMapCache, taps_teacher

CONFIG = PreprocessConfig(size=24, context=3)
REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


def _write_case(folder: Path) -> Case:
    """An oblique-free but flipped (RAS on disk) scan with a box of gland, so the teacher's
    map has to be reoriented as the image is."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    image = rng.normal(100, 10, (40, 30, 9)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[10:25, 8:20, 2:7] = 1
    image[mask > 0] += 80
    nib.save(nib.Nifti1Image(image, affine), folder / "Case00.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), folder / "Case00_segmentation.nii.gz")
    return discover(folder).site(folder.name).cases[0]


class MaskTeacher:
    """A teacher that knows the answer: the case's mask, read on the scan's own grid."""

    def __init__(self, mask: Path, identity: str = "mask teacher 1") -> None:
        self.mask, self.calls = mask, 0
        self.teacher = SourceGridTeacher("mask", identity, self.predict)

    def predict(self, scan: Volume) -> np.ndarray:
        self.calls += 1
        return read_volume(self.mask, labels=True).array.astype(np.float32)


def test_a_map_lines_up_with_the_prepared_image_and_is_cached(tmp_path: Path) -> None:
    case = _write_case(tmp_path / "A")
    assert case.label is not None
    prepared = PreprocessCache(tmp_path / "cache").prepare(case, CONFIG)
    oracle = MaskTeacher(case.label)
    maps = TeacherMapCache(tmp_path / "maps")
    probability = maps.prepare(case, prepared, CONFIG, oracle.teacher)
    assert probability.shape == prepared.image.shape
    # the mask's own preprocessing is the map's, thresholded: voxel for voxel the same
    expected = prepare_labels(read_volume(case.label, labels=True), CONFIG)
    np.testing.assert_array_equal(probability >= 0.5, expected.astype(bool))
    np.testing.assert_array_equal(expected, prepared.label)
    assert (maps.hits, maps.misses, oracle.calls) == (0, 1, 1)

    again = TeacherMapCache(tmp_path / "maps")
    np.testing.assert_array_equal(
        again.prepare(case, prepared, CONFIG, oracle.teacher), probability
    )
    assert (again.hits, again.misses, oracle.calls) == (1, 0, 1)

    # another teacher, or another recipe, is another entry; the mask is no part of the key
    other = MaskTeacher(case.label, identity="mask teacher 2").teacher
    assert maps.key(case, CONFIG, other) != maps.key(case, CONFIG, oracle.teacher)
    wider = PreprocessConfig(size=32, context=3)
    assert maps.key(case, wider, oracle.teacher) != maps.key(case, CONFIG, oracle.teacher)
    unlabelled = Case(case.site, case.id, case.image, None)
    assert maps.key(unlabelled, CONFIG, oracle.teacher) == maps.key(case, CONFIG, oracle.teacher)


def test_a_teacher_map_on_the_wrong_grid_is_refused(tmp_path: Path) -> None:
    case = _write_case(tmp_path / "A")
    prepared = PreprocessCache(tmp_path / "cache").prepare(case, CONFIG)
    wrong = SourceGridTeacher("flat", "flat 1", lambda scan: np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"Case00.nii.gz: teacher 'flat' returned a map of shape"):
        TeacherMapCache(tmp_path / "maps").prepare(case, prepared, CONFIG, wrong)
    outside = SourceGridTeacher("hot", "hot 1", lambda scan: np.full(scan.shape, 2.0, np.float32))
    # prepare_probability clips, so a teacher past 1 is kept in range rather than refused
    kept = TeacherMapCache(tmp_path / "maps").prepare(case, prepared, CONFIG, outside)
    assert kept.max() == 1.0


@pytest.mark.slow
def test_taps_maps_of_a_real_series_match_the_mask_taps_wrote(tmp_path: Path) -> None:
    """TAPS on Prostate3T-03-0001 (about 30 s on one thread), brought to the model grid: its
    map, thresholded at TAPS's 0.55, agrees with TAPS's own mask brought there likewise."""
    site = REAL / "prostate3t_dicom"
    reference = REAL.parent / "reference" / "taps" / "Prostate3T-03-0001_taps.nii.gz"
    if not site.exists() or not reference.exists():
        pytest.skip(f"real MRI not available: {site} or {reference} is missing")
    pytest.importorskip("onnxruntime")
    try:
        teacher = taps_teacher(threads=1)
    except ImportError as error:
        pytest.skip(str(error))
    case = discover(site).site("prostate3t_dicom").cases[0]
    config = PreprocessConfig(size=96, context=3)
    prepared = PreprocessCache(tmp_path / "cache").prepare(case, config)
    maps = TeacherMapCache(tmp_path / "maps")
    probability = maps.prepare(case, prepared, config, teacher)
    assert probability.shape == prepared.image.shape == (19, 96, 96)
    taps_mask = prepare_labels(read_volume(reference, labels=True), config).astype(bool)
    ours = probability > 0.55
    dice = 2 * np.sum(ours & taps_mask) / (ours.sum() + taps_mask.sum())
    assert dice > 0.9, dice
    # the second use reads the cache and never opens the model
    maps.prepare(case, prepared, config, teacher)
    assert (maps.hits, maps.misses) == (1, 1)
