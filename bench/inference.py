"""Inference speed of every student and teacher, Keras against ONNX Runtime, beside the floor.

All measured in one run (full width, 384 x 384 x 3 input, 2 classes, untrained weights,
which do not change the arithmetic):

1. this machine's float32 matrix-multiply rate: numpy (OpenBLAS) and an ONNX Runtime MatMul
   (MLAS, the library ONNX Runtime's convolutions use), 2048 x 2048, best of 5, measured
   before every model and at the end; floors use the fastest rate seen;
2. per model: FLOPs per slice (2 x multiply-accumulates of every convolution and dense layer,
   counted from the built graph by ``napari_kdseg.models.count_flops``), ms per slice with
   Keras ``predict_on_batch`` and with ONNX Runtime, each beside its floor (FLOPs / rate);
3. whole-volume latency of ``kdseg segment``'s pipeline on a 24 x 384 x 384 scan, end to end
   (read the NIfTI, preprocess, infer, post-process, write), beside the inference floor of
   its 24 slices; teachers infer only a few slices, so their volume latency is the measured
   non-inference stages plus 24 x their ms per slice, labelled "extrapolated";
4. for ENet: ONNX Runtime's threads, batch size and graph-optimisation level, and the cost of
   flip test-time augmentation.

    .venv/bin/python bench/inference.py --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import onnx
import onnxruntime as ort

from napari_kdseg.cli import main as main_cli
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.nifti import write_nifti
from napari_kdseg.data.phantom import make_case
from napari_kdseg.data.preprocess import PreprocessConfig, prepare_volume, stack_context
from napari_kdseg.data.volume import Volume
from napari_kdseg.export import export_onnx
from napari_kdseg.inference.onnx_runtime import CPU, load_onnx, open_session, session_options
from napari_kdseg.models import MODEL_NAMES, TEACHERS, build_model, count_flops

GEMM_SIZE = 2048
STAGES = ("read", "preprocess", "infer", "postprocess", "write")


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def gemm_rates(threads: int, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of a float32 2048 x 2048 matrix product in numpy and in ONNX Runtime."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    b = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    square = [GEMM_SIZE, GEMM_SIZE]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, square) for n in "ab"],
        [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, square)],
    )
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8
    )
    session = open_session(model.SerializeToString(), session_options(threads), [CPU])
    flops = 2 * GEMM_SIZE**3
    return {
        "numpy": flops / best_seconds(lambda: a @ b, repeats),
        "onnxruntime": flops / best_seconds(lambda: session.run(None, {"a": a, "b": b}), repeats),
    }


def write_scan(folder: Path, slices: int, size: int) -> Path:
    """Phantom site A case 0, its slices cut or repeated at the ends to ``slices``."""
    image, _ = make_case("A", 0, size=size, seed=0)
    picks = np.clip(np.arange(slices) - (slices - image.shape[0]) // 2, 0, image.shape[0] - 1)
    return write_nifti(Volume(image.array[picks], image.affine), folder / "scan.nii.gz")


def model_inputs(scan: Path, config: PreprocessConfig, count: int) -> np.ndarray:
    """``count`` network inputs from the middle of ``scan``, preprocessed as for training."""
    image, _ = prepare_volume(read_volume(scan), config)
    middle = image.shape[0] // 2 - count // 2
    batch = [stack_context(image, middle + i, config.context) for i in range(count)]
    return np.stack(batch).astype(np.float32)


def save_untrained(folder: Path, name: str, config: PreprocessConfig) -> Path:
    """A full-width untrained ``name`` with a card, as training writes them."""
    path = folder / f"{name}.keras"
    build_model(name, (config.size, config.size, config.context), 2, 1.0).save(path)
    card = {
        "format": "napari-kdseg model card 1",
        "architecture": name,
        "width": 1.0,
        "input": {"size": config.size, "channels": config.context, "layout": "NHWC"},
        "preprocess": config.to_json(),
        "class_names": ["background", "prostate"],
        "training_sites": [],
    }
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def segment_command(model: Path, scan: Path, out: Path, threads: int, *flags: str) -> dict:
    """``kdseg segment MODEL SCAN --out OUT --json`` in this process: its report, with the
    process CPU seconds per wall second of the read-to-write pipeline added (2 on an idle
    2-core machine with 2 threads; less when other work takes the cores)."""
    printed = io.StringIO()
    command = ["segment", str(model), str(scan), "--out", str(out), "--overwrite", "--json"]
    command += ["--threads", str(threads), *flags]
    cpu_started = time.process_time()
    with contextlib.redirect_stdout(printed):
        if main_cli(command) != 0:
            raise RuntimeError(f"kdseg {' '.join(command)} failed")
    cpu = time.process_time() - cpu_started
    report = json.loads(printed.getvalue())
    seconds = report["seconds"]
    seconds["cpu_per_wall"] = cpu / (seconds["total"] + seconds["load model"])
    return seconds


def best_volume(
    model: Path, scan: Path, out: Path, threads: int, repeats: int, *flags: str
) -> dict[str, float]:
    """The fastest of ``repeats`` runs of ``kdseg segment`` (after a warm-up), by total."""
    segment_command(model, scan, out, threads, *flags)
    runs = [segment_command(model, scan, out, threads, *flags) for _ in range(repeats)]
    return min(runs, key=lambda seconds: seconds["total"])


def ort_variants(
    onnx_path: Path, inputs: np.ndarray, threads: int, repeats: int
) -> list[dict[str, Any]]:
    """ENet's ms per slice over ONNX Runtime's threads and batch sizes (with the session
    options ``kdseg segment`` uses), and with two of those options changed."""
    variants: list[tuple[str, int, int]] = [
        ("default", thread_count, batch_size)
        for thread_count in sorted({1, threads})
        for batch_size in (1, 2, 4, 8, len(inputs))
    ]
    variants += [("no NCHWc layout (ORT_ENABLE_EXTENDED)", threads, 1)]
    variants += [("idle threads spin", threads, 1)]
    rows = []
    for name, thread_count, batch_size in variants:
        options = session_options(thread_count)
        if name.startswith("no NCHWc"):
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        if name == "idle threads spin":
            options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        session = open_session(onnx_path, options, [CPU])
        chunks = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]

        def run(session: ort.InferenceSession = session, chunks: list = chunks) -> None:
            for chunk in chunks:
                session.run(None, {"image": chunk})

        seconds = best_seconds(run, repeats)
        rows.append(
            {
                "options": name,
                "threads": thread_count,
                "batch": batch_size,
                "ms_per_slice": 1000 * seconds / len(inputs),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--slices", type=int, default=24, help="slices of the whole volume")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--timed-slices", type=int, default=8, help="slices timed per student")
    parser.add_argument("--teacher-slices", type=int, default=2, help="slices timed per teacher")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    ort.set_default_logger_severity(3)  # the spinning variant overrides a set option: quiet
    with tempfile.TemporaryDirectory(prefix="kdseg-bench-") as folder:
        results = run(args, Path(folder))
    print_tables(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every measurement, in the order the module docstring lists them."""
    import keras

    config = PreprocessConfig(size=args.size, context=3)
    scan = write_scan(work, args.slices, args.size)
    print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs")
    results: dict[str, Any] = {"gemm_flops_per_s": [], "models": {}}
    # students first: the teachers' extrapolated volumes borrow ENet's non-inference stages
    for name in sorted(args.models, key=lambda model: model in TEACHERS):
        results["gemm_flops_per_s"].append(gemm_rates(args.threads))
        teacher = name in TEACHERS
        timed_slices = args.teacher_slices if teacher else args.timed_slices
        repeats = 1 if teacher else args.repeats
        keras_path = save_untrained(work, name, config)
        network = keras.saving.load_model(keras_path, compile=False)
        flops = count_flops(network)
        inputs = model_inputs(scan, config, timed_slices)
        onnx_path = work / f"{name}.onnx"
        export = export_onnx(keras_path, onnx_path, check_inputs=inputs[:2])
        keras_seconds = best_seconds(
            lambda network=network, inputs=inputs: network.predict_on_batch(inputs), repeats
        )
        del network
        onnx_model = load_onnx(onnx_path, threads=args.threads)
        onnx_seconds = best_seconds(
            lambda model=onnx_model, inputs=inputs: model.predict(inputs), repeats
        )
        row: dict[str, Any] = {
            "flops_per_slice": flops,
            "keras_ms_per_slice": 1000 * keras_seconds / timed_slices,
            "onnx_ms_per_slice": 1000 * onnx_seconds / timed_slices,
            "export_max_abs_difference": export.max_abs_difference,
            "volume_extrapolated": teacher,
        }
        if teacher and "enet" in results["models"]:
            measured = results["models"]["enet"]["volume_seconds"]
            volume = {stage: measured[stage] for stage in STAGES if stage != "infer"}
            volume["infer"] = args.slices * onnx_seconds / timed_slices
            row["volume_seconds"] = volume | {"total": sum(volume.values())}
        elif not teacher:
            row["volume_seconds"] = best_volume(
                onnx_path, scan, work / "mask.nii.gz", args.threads, args.repeats
            )
        results["models"][name] = row
        volume_text = (
            f"; volume {row['volume_seconds']['total']:.2f} s" if "volume_seconds" in row else ""
        )
        print(
            f"{name}: {flops / 1e9:.2f} GFLOPs, keras {row['keras_ms_per_slice']:.1f} ms, "
            f"onnx {row['onnx_ms_per_slice']:.1f} ms per slice{volume_text}",
            flush=True,
        )

    if "enet" in results["models"]:
        onnx_path = work / "enet.onnx"
        results["enet_tta_volume_seconds"] = best_volume(
            onnx_path, scan, work / "mask.nii.gz", args.threads, args.repeats, "--tta"
        )
        results["enet_onnx_variants"] = ort_variants(
            onnx_path, model_inputs(scan, config, args.slices), args.threads, args.repeats
        )
    results["gemm_flops_per_s"].append(gemm_rates(args.threads))
    # The floor is the machine at its best: the fastest GEMM seen in the run (other work on a
    # shared machine only ever slows a measurement down).
    rate = max(max(rates.values()) for rates in results["gemm_flops_per_s"])
    results["floor_flops_per_s"] = rate
    for row in results["models"].values():
        row["floor_ms_per_slice"] = 1000 * row["flops_per_slice"] / rate
        row["volume_floor_s"] = args.slices * row["flops_per_slice"] / rate
    print(f"load average at end: {os.getloadavg()}")
    return results


def print_tables(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Markdown tables for bench/README.md."""
    models = results["models"]
    for engine in ("numpy", "onnxruntime"):
        rates = [rates[engine] / 1e9 for rates in results["gemm_flops_per_s"]]
        print(
            f"float32 GEMM {GEMM_SIZE}^2, {engine}: {min(rates):.0f}-{max(rates):.0f} GFLOP/s "
            f"over {len(rates)} measurements"
        )
    print(f"floors use the fastest: {results['floor_flops_per_s'] / 1e9:.0f} GFLOP/s")
    print(
        "\n| model | GFLOPs/slice | floor ms/slice | Keras ms/slice | ONNX Runtime ms/slice "
        f"| volume {args.slices} x {args.size}^2 end to end (s) | its inference floor (s) "
        "| x floor | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in models.items():
        volume, ratio = "-", "-"
        if "volume_seconds" in row:  # teachers borrow ENet's non-inference stages
            total = row["volume_seconds"]["total"]
            label = " (extrapolated)" if row["volume_extrapolated"] else ""
            volume, ratio = f"{total:.2f}{label}", f"{total / row['volume_floor_s']:.1f}"
        print(
            f"| {name} | {row['flops_per_slice'] / 1e9:.2f} | {row['floor_ms_per_slice']:.1f} "
            f"| {row['keras_ms_per_slice']:.1f} | {row['onnx_ms_per_slice']:.1f} "
            f"| {volume} | {row['volume_floor_s']:.2f} | {ratio} "
            f"| {row['export_max_abs_difference']:.1e} |"
        )
    if "enet" in models:
        enet = models["enet"]["volume_seconds"]
        print("\nENet whole volume, seconds per stage:")
        print("| " + " | ".join([*STAGES, "total", "CPU s per wall s"]) + " |")
        print("|" + "---|" * (len(STAGES) + 2))
        cells = [f"{enet[stage]:.3f}" for stage in [*STAGES, "total"]]
        print("| " + " | ".join([*cells, f"{enet['cpu_per_wall']:.2f}"]) + " |")
        tta = results["enet_tta_volume_seconds"]
        print(
            f"with flip TTA: infer {tta['infer']:.3f} s ({tta['infer'] / enet['infer']:.1f}x), "
            f"total {tta['total']:.3f} s"
        )
        for teacher in TEACHERS:
            if "volume_seconds" in models.get(teacher, {}):
                ratio = models[teacher]["volume_seconds"]["total"] / enet["total"]
                print(f"{teacher} / enet whole-volume latency: {ratio:.0f}x")
        print("\n| session options | threads | batch | ENet ONNX Runtime ms/slice |")
        print("|---|---|---|---|")
        for row in results["enet_onnx_variants"]:
            print(
                f"| {row['options']} | {row['threads']} | {row['batch']} "
                f"| {row['ms_per_slice']:.1f} |"
            )


if __name__ == "__main__":
    main()
