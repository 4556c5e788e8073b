"""Is the phantom's site shift real? Leave-one-site-out with a small 2D U-Net, side by side.

For each target site: train on the other five sites (holding out cases of each), then score
3D Dice on the source grid for (a) the held-out cases of the training sites and (b) every case
of the unseen target site. A real domain shift shows as (b) < (a).

    .venv/bin/python bench/site_shift.py --cases-per-site 8 --size 96 --epochs 8

The model here is deliberately generic (a 4-level U-Net, ~0.5 M parameters): the question is
about the data, not about the paper's students.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from scipy import ndimage

from napari_kdseg.data.augment import AugmentConfig
from napari_kdseg.data.cache import PreparedCase, PreprocessCache
from napari_kdseg.data.datasets import Case, discover, split_cases
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.data.preprocess import PreprocessConfig, stack_context
from napari_kdseg.training.pipeline import SliceDataset


def small_unet(size: int, channels: int, width: int = 16) -> keras.Model:
    inputs = keras.Input((size, size, channels))
    x, skips = inputs, []
    for level in range(3):
        x = _double_conv(x, width * 2**level)
        skips.append(x)
        x = keras.layers.MaxPooling2D()(x)
    x = _double_conv(x, width * 8)
    for level in reversed(range(3)):
        x = keras.layers.Conv2DTranspose(width * 2**level, 2, strides=2)(x)
        x = _double_conv(keras.layers.Concatenate()([x, skips[level]]), width * 2**level)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def _double_conv(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    for _ in range(2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    return x


def predict_case(model: keras.Model, case: PreparedCase, context: int) -> np.ndarray:
    """Every slice, back on the source grid, largest connected component (SAML's protocol)."""
    stack = np.stack([stack_context(case.image, z, context) for z in range(case.image.shape[0])])
    probabilities = keras.ops.convert_to_numpy(
        keras.ops.softmax(model.predict(stack, batch_size=16, verbose=0), axis=-1)
    )
    mask = case.geometry.probabilities_to_source(probabilities)
    components, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, components, index=range(1, count + 1))
        mask = (components == 1 + int(np.argmax(sizes))).astype(np.uint8)
    return mask


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    prediction, truth = prediction > 0, truth > 0
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * np.sum(prediction & truth) / total)


def score(
    model: keras.Model, cases: list[Case], cache: PreprocessCache, config: PreprocessConfig
) -> list[float]:
    """3D Dice of every case on its source grid."""
    scores = []
    for case in cases:
        assert case.label is not None
        prediction = predict_case(model, cache.prepare(case, config), config.context)
        scores.append(dice(prediction, read_volume(case.label, labels=True).array))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="phantom folder (generated if missing)")
    parser.add_argument("--cases-per-site", type=int, default=8)
    parser.add_argument("--held-out", type=int, default=2, help="in-domain test cases per site")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--targets", default="ABCDEF")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    data = args.data or Path(tempfile.mkdtemp(prefix="kdseg-shift-")) / "phantom"
    generate_phantom(data, cases_per_site=args.cases_per_site, size=args.size, seed=args.seed)
    dataset = discover(data)
    config = PreprocessConfig(size=args.size, context=3)
    cache = PreprocessCache(data.parent / "cache")
    splits = {
        site: split_cases(dataset.cases([site]), args.held_out / args.cases_per_site, args.seed)
        for site in dataset.site_names
    }
    keras.utils.set_random_seed(args.seed)
    rows = []
    print(f"{'target':<7}{'in-domain Dice':>16}{'unseen-site Dice':>18}{'gap':>8}{'time s':>8}")
    for target in args.targets:
        started = time.perf_counter()
        train = [c for s, (kept, _) in splits.items() if s != target for c in kept]
        in_domain = [c for s, (_, held) in splits.items() if s != target for c in held]
        unseen = dataset.cases([target])
        model = small_unet(args.size, config.context)
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        batches = SliceDataset(
            cache.prepare_all(train, config),
            16,
            config.context,
            augment=AugmentConfig(),
            outside_share=0.25,
            seed=args.seed,
        )
        model.fit(batches, epochs=args.epochs, verbose=0)
        seen_scores = score(model, in_domain, cache, config)
        unseen_scores = score(model, unseen, cache, config)
        row = {
            "target": target,
            "in_domain_dice": float(np.mean(seen_scores)),
            "in_domain_std": float(np.std(seen_scores)),
            "unseen_dice": float(np.mean(unseen_scores)),
            "unseen_std": float(np.std(unseen_scores)),
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        print(
            f"{target:<7}{row['in_domain_dice']:>10.3f} ± {row['in_domain_std']:.2f}"
            f"{row['unseen_dice']:>12.3f} ± {row['unseen_std']:.2f}"
            f"{row['in_domain_dice'] - row['unseen_dice']:>8.3f}{row['seconds']:>8.0f}",
            flush=True,
        )
    seen = np.mean([r["in_domain_dice"] for r in rows])
    unseen = np.mean([r["unseen_dice"] for r in rows])
    print(f"{'mean':<7}{seen:>16.3f}{unseen:>18.3f}{seen - unseen:>8.3f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"data": str(data)}, "rows": rows}, indent=2, default=str
            )
        )


if __name__ == "__main__":
    main()
