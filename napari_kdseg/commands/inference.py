"""Inference commands: ``kdseg export`` (``.keras`` to a checked ONNX file) and ``kdseg segment``.

``kdseg segment`` on an ``.onnx`` model imports ONNX Runtime only, never TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_kdseg.commands import EXIT_OK, Subcommands

if TYPE_CHECKING:
    from napari_kdseg.data.volume import Volume

#: Stages of ``kdseg segment`` in the order they run (``total`` is read to write).
SEGMENT_STAGES = ("read", "preprocess", "infer", "postprocess", "quality", "write")
#: Slices stacked, passed to the model and turned into probabilities together; the model
#: splits them into its own batch size (``--batch-size``).
SLICES_PER_STEP = 16


def register(commands: Subcommands) -> None:
    export = commands.add_parser(
        "export",
        help="convert a trained .keras model to ONNX with its card embedded, checked against Keras",
    )
    export.add_argument("model", type=Path, help="trained .keras model (its card .json beside it)")
    export.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    export.add_argument(
        "--check-scan",
        type=Path,
        metavar="SCAN",
        help="scan (NIfTI, MetaImage or DICOM folder) to check on (default: a phantom case)",
    )
    export.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest allowed |ONNX - Keras| of the logits (default 1e-4)",
    )
    export.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.add_argument("--json", action="store_true", help="print the report as one JSON object")
    export.set_defaults(run=_export)

    segment = commands.add_parser(
        "segment", help="segment a scan with an .onnx (or .keras) model and write the mask"
    )
    segment.add_argument("model", type=Path, help="exported .onnx model (or a .keras one)")
    segment.add_argument(
        "input",
        type=Path,
        help="scan: NIfTI (.nii, .nii.gz), MetaImage (.mhd, .mha) or DICOM folder",
    )
    segment.add_argument("--out", type=Path, required=True, help="mask to write (.nii or .nii.gz)")
    segment.add_argument("--gt", type=Path, help="ground-truth mask: print Dice, HD95 and ASD")
    segment.add_argument(
        "--series", help="DICOM series (UID or number) when the folder holds several"
    )
    segment.add_argument(
        "--volume",
        type=int,
        metavar="N",
        help="volume (0-based) of a 4D NIfTI or MetaImage scan, e.g. one time point",
    )
    segment.add_argument(
        "--tta", action="store_true", help="average over in-plane flips (3 passes: 3x the time)"
    )
    segment.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    segment.add_argument(
        "--batch-size",
        type=int,
        help="slices per inference call (default: 1 in ONNX Runtime on the CPU, 16 on a GPU or "
        "in Keras)",
    )
    segment.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    segment.add_argument("--json", action="store_true", help="print the report as one JSON object")
    segment.set_defaults(run=_segment)


def _export(args: argparse.Namespace) -> int:
    from napari_kdseg.export import DEFAULT_OPSET, export_onnx

    check_inputs = None
    if args.check_scan is not None:
        from napari_kdseg.data.io import read_volume

        check_inputs = read_volume(args.check_scan)
    report = export_onnx(
        args.model,
        args.out,
        check_inputs=check_inputs,
        tolerance=args.tolerance,
        opset=args.opset or DEFAULT_OPSET,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(report.to_json()))
        return EXIT_OK
    comparison = report.comparison
    print(f"wrote {report.path} ({report.bytes / 1e6:.1f} MB, opset {report.opset})")
    print(f"checked on {report.check_inputs}")
    print(
        f"max |ONNX Runtime - Keras| of the logits: {comparison.max_abs_difference:.2e} "
        f"(tolerance {report.tolerance:g}); onnx.checker passed"
    )
    if comparison.switch_flips:
        print(
            f"end to end {comparison.end_to_end_max_abs_difference:.2e}: {comparison.switch_flips}"
            " max-unpooling window(s) holding a float32 tie were resolved differently; the "
            "difference above has the switches pinned to Keras's"
        )
    print(f"predicted classes agree at {100 * comparison.label_agreement:.4f} % of pixels")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    return EXIT_OK


def _segment(args: argparse.Namespace) -> int:
    from napari_kdseg.data.io import read_volume, write_labels
    from napari_kdseg.data.layout import is_nifti
    from napari_kdseg.inference.loading import load_model
    from napari_kdseg.inference.segment import scan_warnings, segment

    if not is_nifti(args.out):
        raise ValueError(f"--out {args.out} must end in .nii or .nii.gz")
    sidecar = sidecar_path(args.out)
    for path in (args.out, sidecar):
        if path.exists() and not args.overwrite:
            raise ValueError(f"{path} already exists; pass --overwrite to replace it")
    started = time.perf_counter()
    options: dict[str, Any] = {}
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if args.model.suffix == ".onnx":
        options["threads"] = args.threads
    elif args.threads is not None:
        raise ValueError("--threads applies to .onnx models (ONNX Runtime) only")
    model = load_model(args.model, **options)
    seconds = {"load model": time.perf_counter() - started}

    truth = read_volume(args.gt, labels=True) if args.gt is not None else None

    pipeline_started = time.perf_counter()
    scan = read_volume(args.input, series=args.series, volume=args.volume)
    seconds["read"] = time.perf_counter() - pipeline_started
    if truth is not None:
        _check_same_grid(args.gt, truth, scan)
    warnings = scan_warnings(model.model_card, scan)
    result = segment(scan, model, batch_size=SLICES_PER_STEP, tta=args.tta)
    seconds |= result.seconds
    started = time.perf_counter()
    write_labels(result.labels, scan, args.out)
    quality = None if result.quality is None else result.quality.to_json()
    write_sidecar(sidecar, _sidecar(args, model, scan, quality, warnings))
    seconds["write"] = time.perf_counter() - started
    seconds["total"] = time.perf_counter() - pipeline_started

    report: dict[str, Any] = {
        "model": str(args.model),
        "runtime": model.runtime,
        "input": str(args.input),
        "out": str(args.out),
        "shape": list(scan.shape),
        "spacing_mm": list(scan.spacing),
        "tta": args.tta,
        "foreground_voxels": int(result.labels.sum()),
        "seconds": {key: round(value, 4) for key, value in seconds.items()},
        "warnings": warnings,
        "quality": quality,
        "sidecar": str(sidecar),
    }
    if truth is not None:
        from napari_kdseg.evaluation.metrics import score

        report["scores"] = score(result.labels, truth.array > 0, scan.spacing).to_json()
    if args.json:
        print(json.dumps(report))
    else:
        _print_segment_report(report)
    return EXIT_OK


def sidecar_path(mask: Path) -> Path:
    """The JSON written beside a mask: ``mask.nii.gz`` -> ``mask.json``."""
    name = mask.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return mask.with_name(name[: -len(suffix)] + ".json")
    return mask.with_name(name + ".json")


def write_sidecar(path: Path, data: dict[str, Any]) -> None:
    """Write the mask's sidecar JSON in one rename, so a reader never sees half of it."""
    from napari_kdseg.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _sidecar(
    args: argparse.Namespace,
    model: Any,
    scan: Volume,
    quality: dict[str, Any] | None,
    warnings: list[str],
) -> dict[str, Any]:
    """What travels with the mask: where it came from and how far to trust it."""
    card = model.model_card
    return {
        "mask": args.out.name,
        "scan": str(args.input),
        "model": str(args.model),
        "architecture": card.architecture,
        "training_sites": list(card.training_sites or ()),
        "runtime": model.runtime,
        "tta": args.tta,
        "warnings": warnings,
        "quality": quality,
    }


def _check_same_grid(path: Path, truth: Volume, scan: Volume) -> None:
    """Refuse a ground truth that does not lie on the scan's grid (shape and affine)."""
    if not scan.same_grid(truth):
        raise ValueError(
            f"--gt {path}: its grid (shape {truth.shape}, spacing "
            f"{tuple(round(s, 3) for s in truth.spacing)}) differs from the scan's (shape "
            f"{scan.shape}, spacing {tuple(round(s, 3) for s in scan.spacing)}) or their "
            "affines disagree"
        )


def _print_segment_report(report: dict[str, Any]) -> None:
    for warning in report["warnings"]:
        print(f"Warning: {warning}")
    shape = " x ".join(map(str, report["shape"]))
    print(f"segmented {report['input']} ({shape}) -> {report['out']}")
    print(f"runtime: {report['runtime']}" + (", flip TTA (3 passes)" if report["tta"] else ""))
    seconds = report["seconds"]
    stages = [*SEGMENT_STAGES, "total"]
    print("seconds: " + ", ".join(f"{stage} {seconds[stage]:.3f}" for stage in stages))
    print(f"model loading (not in total): {seconds['load model']:.3f} s")
    print(f"foreground voxels: {report['foreground_voxels']}")
    quality = report.get("quality")
    if quality is not None:
        print(f"quality: {quality['verdict'].upper()}")
        for reason in quality["reasons"]:
            print(f"  - {reason}")
        worst = quality["uncertainty"]["worst_slices"]
        if worst:
            print("least certain slices: " + ", ".join(map(str, worst)))
        if quality["training_data"] == "unknown":
            print(
                "  (the model card does not describe its training scans: how this scan "
                "compares with them is unknown)"
            )
    print(f"sidecar: {report['sidecar']}")
    if "scores" in report:
        scores = report["scores"]
        hd95 = "undefined" if scores["hd95"] is None else f"{scores['hd95']:.2f} mm"
        asd = "undefined" if scores["asd"] is None else f"{scores['asd']:.2f} mm"
        print(f"Dice {scores['dice']:.4f}, HD95 {hd95}, ASD {asd}")
