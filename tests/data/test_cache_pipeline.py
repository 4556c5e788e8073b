"""The preprocessed-case cache, the augmentations and the Keras slice pipeline."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_kdseg.data.augment import AugmentConfig, augment_slice
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import Case, discover
from napari_kdseg.data.preprocess import PreprocessConfig

SHAPE = (40, 36, 12)  # file order (i, j, k)


def _write_case(folder: Path, name: str, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-0.6, -0.6, 3.0, 1.0])
    image = rng.normal(300, 50, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[12:26, 10:24, 3:9] = 1
    image[mask > 0] += 200
    nib.save(nib.Nifti1Image(image, affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), folder / f"{name}_segmentation.nii.gz")
    return Case(
        folder.name, name, folder / f"{name}.nii.gz", folder / f"{name}_segmentation.nii.gz"
    )


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    for number in range(3):
        _write_case(tmp_path / "data" / "A", f"Case{number:02d}", number)
    return tmp_path / "data"


def test_cache_hits_on_second_run_and_keys_on_content(dataset_root: Path, tmp_path: Path) -> None:
    cases = discover(dataset_root).cases()
    config = PreprocessConfig(size=32)
    first = PreprocessCache(tmp_path / "cache")
    prepared = first.prepare_all(cases, config)
    assert (first.hits, first.misses) == (0, 3)
    second = PreprocessCache(tmp_path / "cache")
    again = second.prepare_all(cases, config)
    assert (second.hits, second.misses) == (3, 0)
    for a, b in zip(prepared, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.geometry.to_json() == b.geometry.to_json()
    assert isinstance(again[0].image, np.memmap), "cached arrays are memory-mapped"
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]

    # Other parameters or other bytes under the same name: a different entry.
    assert second.key(cases[0], PreprocessConfig(size=48)) != second.key(cases[0], config)
    old_key = second.key(cases[0], config)
    _write_case(dataset_root / "A", "Case00", seed=99)
    assert second.key(cases[0], config) != old_key
    second.prepare(cases[0], config)
    assert second.misses == 1


def test_damaged_cache_entry_is_rebuilt(dataset_root: Path, tmp_path: Path) -> None:
    case = discover(dataset_root).cases()[0]
    cache = PreprocessCache(tmp_path / "cache")
    config = PreprocessConfig(size=32)
    reference = np.array(cache.prepare(case, config).image)
    (tmp_path / "cache" / cache.key(case, config) / "image.npy").write_bytes(b"truncated")
    rebuilt = cache.prepare(case, config)
    assert cache.misses == 2
    np.testing.assert_array_equal(rebuilt.image, reference)


def test_flips_are_exact_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 3)).astype(np.float32)
    mask = (rng.random((16, 16)) > 0.5).astype(np.uint8)
    flips_only = AugmentConfig(
        flip_left_right=1.0,
        rotation_probability=0,
        scale_probability=0,
        gamma_probability=0,
        noise_probability=0,
    )
    flipped, flipped_mask = augment_slice(image, mask, flips_only, np.random.default_rng(1))
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(flipped_mask, mask[:, ::-1])
    everything = AugmentConfig(
        rotation_probability=1, scale_probability=1, gamma_probability=1, noise_probability=1
    )
    a = augment_slice(image, mask, everything, np.random.default_rng(5))
    b = augment_slice(image, mask, everything, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], image)


def test_spatial_augmentation_keeps_image_and_mask_aligned() -> None:
    """Rotate and scale a disc drawn in both image and mask: they must still coincide."""
    rows, cols = np.mgrid[0:64, 0:64]
    disc = ((rows - 24) ** 2 + (cols - 36) ** 2 < 12**2).astype(np.uint8)
    image = np.repeat(disc[..., None].astype(np.float32), 3, axis=-1)
    spatial = AugmentConfig(
        flip_left_right=0.5,
        flip_up_down=0.5,
        rotation_probability=1,
        max_rotation_degrees=30,
        scale_probability=1,
        gamma_probability=0,
        noise_probability=0,
    )
    for seed in range(5):
        warped, warped_mask = augment_slice(image, disc, spatial, np.random.default_rng(seed))
        assert set(np.unique(warped_mask).tolist()) <= {0, 1}
        overlap = np.sum((warped[..., 1] > 0.5) & (warped_mask > 0))
        assert 2 * overlap / (np.sum(warped[..., 1] > 0.5) + np.sum(warped_mask)) > 0.95


def test_gamma_keeps_range() -> None:
    image = np.linspace(-2, 3, 64, dtype=np.float32).reshape(8, 8, 1)
    gamma_only = AugmentConfig(
        flip_left_right=0,
        rotation_probability=0,
        scale_probability=0,
        gamma_probability=1,
        noise_probability=0,
    )
    out, _ = augment_slice(image, np.zeros((8, 8), np.uint8), gamma_only, np.random.default_rng(0))
    assert out.min() == pytest.approx(-2)
    assert out.max() == pytest.approx(3)
    assert not np.allclose(out, image)


def test_slice_dataset_batches(dataset_root: Path, tmp_path: Path) -> None:
    from napari_kdseg.training.pipeline import SliceDataset

    cases = PreprocessCache(tmp_path / "cache").prepare_all(
        discover(dataset_root).cases(), PreprocessConfig(size=32)
    )
    train = SliceDataset(cases, batch_size=4, context=3, augment=AugmentConfig(), seed=7)
    assert train.num_slices == 3 * 6  # the gland spans file slices 3..8 of each case
    assert len(train) == 5
    x, y = train[0]
    assert x.shape == (4, 32, 32, 3)
    assert x.dtype == np.float32
    assert y.shape == (4, 32, 32)
    assert y.dtype == np.int32
    assert train[4][0].shape[0] == 2  # the remainder batch
    # Same epoch and batch: same data; next epoch: a new order.
    np.testing.assert_array_equal(
        train[1][0], SliceDataset(cases, 4, 3, augment=AugmentConfig(), seed=7)[1][0]
    )
    before = train[0][0]
    train.on_epoch_end()
    assert not np.array_equal(before, train[0][0])

    every = SliceDataset(cases, batch_size=8, context=1, slices="all", shuffle=False)
    assert every.num_slices == 3 * 12
    x, y = every[0]
    assert x.shape == (8, 32, 32, 1)
    np.testing.assert_array_equal(x[0, ..., 0], cases[0].image[0])
    with pytest.raises(ValueError, match="'gland' or 'all'"):
        SliceDataset(cases, 4, 3, slices="some")


def test_slice_dataset_trains_a_keras_model(dataset_root: Path, tmp_path: Path) -> None:
    """The pipeline feeds ``fit`` directly (one tiny epoch)."""
    import keras

    from napari_kdseg.training.pipeline import SliceDataset

    cases = PreprocessCache(tmp_path / "cache").prepare_all(
        discover(dataset_root).cases(), PreprocessConfig(size=16, context=3)
    )
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(SliceDataset(cases, 8, 3, augment=AugmentConfig()), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
