"""Input pipeline costs at the paper's grid (384 x 384, 3 slices), measured side by side.

1. Preparing cases: decode + reorient + z-score + resample (cache miss) against reading the
   cached, memory-mapped arrays (cache hit, content hashing included).
2. Producing training batches of 16 from the cache: without and with augmentation.

    .venv/bin/python bench/input_pipeline.py --cases 6
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_kdseg.data.augment import AugmentConfig
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.data.preprocess import PreprocessConfig
from napari_kdseg.training.pipeline import SliceDataset


def _timed(function: Callable[[], object], repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=6, help="cases (one site, A)")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kdseg-bench-"))
    generate_phantom(work / "phantom", cases_per_site=args.cases, size=args.size, sites="A")
    cases = discover(work / "phantom").cases()
    config = PreprocessConfig(size=args.size, context=3)

    cold = _timed(lambda: PreprocessCache(work / "cache").prepare_all(cases, config))
    warm = _timed(lambda: PreprocessCache(work / "cache").prepare_all(cases, config), repeats=3)
    prepared = PreprocessCache(work / "cache").prepare_all(cases, config)
    slices = sum(c.image.shape[0] for c in prepared)
    print(f"prepare {len(cases)} cases ({slices} slices, {args.size}x{args.size}):")
    print(f"  decode+preprocess (cache miss) {cold:7.2f} s")
    print(f"  cached, memory-mapped (hit)    {warm:7.2f} s   ratio miss/hit {cold / warm:6.1f}x")

    def batches(augment: AugmentConfig | None) -> float:
        data = SliceDataset(prepared, 16, 3, augment=augment, outside_share=0.25, seed=0)
        count = min(args.batches, len(data))
        seconds = _timed(lambda: [data[i % len(data)] for i in range(count)])
        return count * 16 / seconds

    plain = batches(None)
    augmented = batches(AugmentConfig())
    heavy = batches(
        AugmentConfig(
            rotation_probability=1.0,
            scale_probability=1.0,
            gamma_probability=1.0,
            noise_probability=1.0,
        )
    )
    print("training slices per second from the cache (one thread):")
    print(f"  no augmentation                {plain:7.0f}")
    print(f"  default augmentation           {augmented:7.0f}   ({plain / augmented:4.1f}x slower)")
    print(f"  every augmentation every time  {heavy:7.0f}   ({plain / heavy:4.1f}x slower)")
    print(f"(numpy {np.__version__}; work folder {work})")


if __name__ == "__main__":
    main()
