"""Distillation throughput, side by side: what the AAM, KMM and LM losses cost.

Measured in one run, on the same synthetic batches (images/s, higher is better):

1. the student's training step alone (segmentation loss only);
2. the teacher's forward pass alone (inference mode, no XLA, as in training);
3. their sum, teacher forward + student step: the floor of any distillation step;
4. distillation steps with each relation loss on by itself, and with all three (eq. 8).

The overhead of the losses is (4) against (3): the goal is under 30 % for all three together.
(A distillation step with every loss off is no baseline: TensorFlow prunes the unused teacher
forward from the graph. For the same reason KMM alone runs only the teacher's encoder.)

    .venv/bin/python bench/distill_throughput.py --size 128 --batch 8 --steps 6
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import keras
import numpy as np

from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.models import build_model
from napari_kdseg.training.config import DistillationConfig
from napari_kdseg.training.distiller import Distiller


def _images_per_second(run: Callable[[], object], images: int, repeats: int = 2) -> float:
    run()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="enet")
    parser.add_argument("--teacher", default="unetpp")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.size, args.size, 3)
    count = args.batch * args.steps
    x = rng.standard_normal((count, *shape), dtype=np.float32)
    y = (rng.random((count, args.size, args.size)) > 0.7).astype(np.int32)
    teacher = build_model(args.teacher, shape, 2, args.width)
    rows: list[tuple[str, float]] = []

    student = build_model(args.student, shape, 2, args.width)
    student.compile(keras.optimizers.Adam(1e-3), SegmentationLoss(), jit_compile=False)
    rows.append(
        (
            "student step alone",
            _images_per_second(
                lambda: student.fit(x, y, batch_size=args.batch, epochs=1, verbose=0), count
            ),
        )
    )
    teacher.compile(jit_compile=False)  # as inside a training step: no XLA
    rows.append(
        (
            "teacher forward alone",
            _images_per_second(lambda: teacher.predict(x, batch_size=args.batch, verbose=0), count),
        )
    )
    floor = 1.0 / (1.0 / rows[0][1] + 1.0 / rows[1][1])
    rows.append(("teacher forward + student", floor))

    cells = {
        "distill + LM": ["logits"],
        "distill + KMM": ["kernel_matrix"],
        "distill + AAM": ["affinity"],
        "distill + AAM + KMM + LM": ["logits", "kernel_matrix", "affinity"],
    }
    for label, losses in cells.items():
        distiller = Distiller(
            teacher,
            build_model(args.student, shape, 2, args.width),
            DistillationConfig().only(losses),
            SegmentationLoss(),
        )
        distiller.compile(keras.optimizers.Adam(1e-3), jit_compile=False)
        rows.append(
            (
                label,
                _images_per_second(
                    lambda d=distiller: d.fit(x, y, batch_size=args.batch, epochs=1, verbose=0),
                    count,
                ),
            )
        )

    print(
        f"{args.student} from {args.teacher}, width {args.width}, {args.size}x{args.size}x3, "
        f"batch {args.batch}, {args.steps} steps; backend {keras.backend.backend()}"
    )
    base = dict(rows)["teacher forward + student"]
    print(f"{'configuration':<28}{'images/s':>10}{'overhead vs teacher fwd + student':>36}")
    for label, rate in rows:
        overhead = f"{base / rate - 1:+.1%}" if label.startswith("distill") else ""
        print(f"{label:<28}{rate:>10.1f}{overhead:>36}")


if __name__ == "__main__":
    main()
