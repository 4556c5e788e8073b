"""A Keras teacher run at every step against its predictions computed once and read from the batch.

Side by side in one run, on the same phantom cases, the same student (same initial weights),
the same augmented batches and the same terms (LM and AAM: a precomputed teacher has no
features, so KMM is off in both):

1. seconds per distillation epoch with the teacher's forward pass in every step;
2. the one-off cost of computing the teacher's maps (cache miss) and of reading them back
   (cache hit), then seconds per epoch with the maps carried in the batch;
3. what precomputing changes in the targets: the live teacher sees the augmented slice, the
   precomputed one sees the original and its map is warped with the slice. Per augmentation
   kind, the mean absolute difference of the two foreground probabilities and the Dice of
   their 0.5 thresholds, over the training slices.

    .venv/bin/python bench/teacher_cache.py --cases 4 --size 64 --epochs 3 --teacher-epochs 4
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from napari_kdseg.core.events import muted
from napari_kdseg.data.augment import AugmentConfig, augment_sample
from napari_kdseg.data.cache import PreparedCase, PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.data.preprocess import PreprocessConfig, stack_context
from napari_kdseg.distillation.precomputed import KerasTeacherMaps
from napari_kdseg.distillation.teacher import PrecomputedTeacher
from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.models import build_model
from napari_kdseg.teachers.maps import TeacherMapCache
from napari_kdseg.training.config import DistillationConfig, TrainConfig
from napari_kdseg.training.distiller import Distiller
from napari_kdseg.training.pipeline import SliceDataset
from napari_kdseg.training.run import RunOptions, train

OFF = AugmentConfig(
    flip_left_right=0,
    flip_up_down=0,
    rotation_probability=0,
    scale_probability=0,
    gamma_probability=0,
    noise_probability=0,
)
AUGMENTATIONS = {
    "none": OFF,
    "left-right flip (p = 1)": dataclasses.replace(OFF, flip_left_right=1),
    "rotation <= 15 deg and scale 0.85-1.15 (p = 1)": dataclasses.replace(
        OFF, rotation_probability=1, scale_probability=1
    ),
    "gamma 0.7-1.5 and noise (p = 1)": dataclasses.replace(
        OFF, gamma_probability=1, noise_probability=1
    ),
    "the default mix (training)": AugmentConfig(),
}


class _EpochTimes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def _fit(
    teacher: Any, data: SliceDataset, args: argparse.Namespace, shape: tuple[int, ...]
) -> list[float]:
    keras.utils.set_random_seed(args.seed)  # the same student weights in both runs
    student = build_model(args.student, shape, 2, 1.0)
    config = DistillationConfig().only(["logits", "affinity"])
    distiller = Distiller(teacher, student, config, SegmentationLoss())
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    times = _EpochTimes()
    data.epoch = 0  # the same batch order and augmentations for both
    data._order = data._epoch_order()
    distiller.fit(data, epochs=args.epochs, callbacks=[times], verbose=0)
    return times.seconds


def _agreement(
    model: keras.Model, cases: list[PreparedCase], maps: list[np.ndarray], context: int
) -> dict[str, tuple[float, float]]:
    """Per augmentation: mean |p_live - p_warped| and Dice of their 0.5 thresholds."""
    results = {}
    for name, config in AUGMENTATIONS.items():
        live, warped = [], []
        for number, (case, teacher_map) in enumerate(zip(cases, maps, strict=True)):
            for index in range(case.image.shape[0]):
                rng = np.random.default_rng([number, index])
                image = stack_context(case.image, index, context)
                mask = np.zeros(image.shape[:2], np.uint8)
                image, _, (moved,) = augment_sample(image, mask, [teacher_map[index]], config, rng)
                live.append(image)
                warped.append(moved)
        logits = model.predict(np.stack(live), batch_size=32, verbose=0)
        p_live = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))[..., 1]
        p_warped = np.stack(warped)
        a, b = p_live > 0.5, p_warped > 0.5
        dice = 2 * np.sum(a & b) / max(int(a.sum() + b.sum()), 1)
        results[name] = (float(np.mean(np.abs(p_live - p_warped))), float(dice))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=4, help="phantom cases (site A)")
    parser.add_argument("--size", type=int, default=64, help="model grid")
    parser.add_argument("--epochs", type=int, default=3, help="distillation epochs timed")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--teacher", default="unetpp")
    parser.add_argument("--teacher-width", type=float, default=0.25)
    parser.add_argument("--student", default="enet")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="teacher-cache-"))
    root = generate_phantom(work / "data", cases_per_site=args.cases, size=args.size, sites="A")
    dataset = discover(root)
    preprocess = PreprocessConfig(size=args.size, context=3)
    shape = (args.size, args.size, preprocess.context)
    cache = PreprocessCache(work / "cache")

    # A teacher that has learned something, so the agreement figures mean something.
    teacher_config = TrainConfig(
        model=args.teacher,
        width=args.teacher_width,
        preprocess=preprocess,
        epochs=args.teacher_epochs,
        batch_size=args.batch,
        learning_rate=3e-3,
        cycle_step_size=50,
        validation_fraction=0.0,
        seed=args.seed,
    )
    started = time.perf_counter()
    with muted():
        trained = train(dataset, ["A"], teacher_config, work / "teacher", RunOptions(cache))
    seconds = time.perf_counter() - started
    print(f"teacher {args.teacher} x{args.teacher_width} trained in {seconds:.0f} s")
    assert trained.model_path is not None
    model = keras.saving.load_model(trained.model_path, compile=False)

    cases = dataset.cases(["A"])
    prepared = cache.prepare_all(cases, preprocess)
    augment = AugmentConfig()
    maps_teacher = KerasTeacherMaps(model, trained.model_path, batch_size=32)
    miss_started = time.perf_counter()
    maps = TeacherMapCache(work / "maps").prepare_all(cases, prepared, preprocess, maps_teacher)
    miss = time.perf_counter() - miss_started
    hit_started = time.perf_counter()
    again = TeacherMapCache(work / "maps")
    maps = again.prepare_all(cases, prepared, preprocess, maps_teacher)
    hit = time.perf_counter() - hit_started
    assert again.hits == len(cases)

    live_data = SliceDataset(
        prepared,
        args.batch,
        preprocess.context,
        augment=augment,
        outside_share=0.25,
        seed=args.seed,
    )
    carried_data = SliceDataset(
        prepared,
        args.batch,
        preprocess.context,
        augment=augment,
        outside_share=0.25,
        seed=args.seed,
        teacher_maps=maps,
    )
    live = _fit(model, live_data, args, shape)
    carried = _fit(PrecomputedTeacher(2, shape, name="cached"), carried_data, args, shape)

    slices = live_data.num_slices
    print(
        f"\n{len(cases)} cases, {slices} training slices/epoch, {args.size} x {args.size}, "
        f"batch {args.batch}, student {args.student}, "
        f"teacher {args.teacher} x{args.teacher_width}, "
        f"LM + AAM, default augmentation, keras {keras.__version__} ({keras.backend.backend()})"
    )
    print("\n| what | seconds per epoch (epochs 2+; epoch 1 incl. tracing) |\n|---|---|")
    for name, seconds in (("teacher run every step", live), ("maps read from the batch", carried)):
        rest = seconds[1:] or seconds
        print(f"| {name} | {np.median(rest):.2f} (first {seconds[0]:.1f}) |")
    ratio = np.median(live[1:] or live) / np.median(carried[1:] or carried)
    print(f"| ratio live / precomputed | {ratio:.2f}x |")
    print(f"| maps computed once (cache miss), {len(cases)} cases | {miss:.2f} s |")
    print(f"| maps read back (cache hit) | {hit:.3f} s |")

    print("\n| augmentation | mean abs. difference of p | Dice of p > 0.5 |\n|---|---|---|")
    for name, (difference, dice) in _agreement(model, prepared, maps, preprocess.context).items():
        print(f"| {name} | {difference:.4f} | {dice:.3f} |")
    print(f"\n(work folder {work})")


if __name__ == "__main__":
    main()
