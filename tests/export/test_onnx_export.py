"""``kdseg export``: every architecture converts through tf2onnx and reproduces Keras.

Tiny untrained models (width 0.125, 32 x 32 x 3) keep conversion to a few seconds each; one
module-scoped fixture exports all five once and the tests share the files.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest

from napari_kdseg.card import CARD_METADATA_KEY
from napari_kdseg.cli import main
from napari_kdseg.export import ExportError, ExportReport, export_onnx, onnx_export
from napari_kdseg.export.check import Comparison
from napari_kdseg.inference.loading import load_model
from napari_kdseg.models import MODEL_NAMES, build_model

pytestmark = pytest.mark.slow  # trains or exports models: scheduled first (conftest)

SIZE = 32


def card_for(name: str) -> dict:
    return {
        "format": "napari-kdseg model card 1",
        "architecture": name,
        "width": 0.125,
        "input": {"size": SIZE, "channels": 3, "layout": "NHWC"},
        "preprocess": {
            "size": SIZE,
            "context": 3,
            "orientation": "LPS",
            "normalisation": "z-score over the whole volume",
            "labels": "label > 0 is prostate",
        },
        "class_names": ["background", "prostate"],
        "training_sites": ["B", "C"],
        "metrics": {"best_val_dice": 0.5},
    }


def save_keras(folder: Path, name: str) -> Path:
    """An untrained ``name`` saved as training saves it: ``.keras`` with its card beside it."""
    path = folder / f"{name}.keras"
    build_model(name, (SIZE, SIZE, 3), 2, 0.125).save(path)
    path.with_suffix(".json").write_text(json.dumps(card_for(name)))
    return path


@dataclass
class Exported:
    keras: Path
    onnx: Path
    report: ExportReport


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    folder = tmp_path_factory.mktemp("export")
    results = {}
    for name in MODEL_NAMES:
        keras, out = save_keras(folder, name), folder / f"{name}.onnx"
        results[name] = Exported(keras, out, export_onnx(keras, out))
    return results


@pytest.fixture(scope="module")
def exported_by_command(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """``kdseg export --json`` of ESPNet: exit status, what it printed, the file."""
    folder = tmp_path_factory.mktemp("command")
    out = folder / "espnet.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", str(save_keras(folder, "espnet")), "--out", str(out), "--json"])
    return code, printed.getvalue(), out


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_architecture_exports_and_matches_keras(
    exported: dict[str, Exported], name: str
) -> None:
    result = exported[name]
    report = result.report
    assert report.max_abs_difference <= 1e-4
    assert report.comparison.flips_at_clear_maxima == 0
    assert report.checker_passed
    assert report.bytes == result.onnx.stat().st_size
    model = onnx.load(result.onnx)
    onnx.checker.check_model(model, full_check=True)
    batch_dims = [
        value.type.tensor_type.shape.dim[0] for value in (*model.graph.input, *model.graph.output)
    ]
    assert [dim.dim_param for dim in batch_dims] == ["batch", "batch"]
    assert model.producer_name == "napari-kdseg"
    assert name in model.doc_string


def test_card_round_trips_through_the_metadata(exported: dict[str, Exported]) -> None:
    result = exported["enet"]
    metadata = {p.key: p.value for p in onnx.load(result.onnx).metadata_props}
    card = json.loads(metadata[CARD_METADATA_KEY])
    check = card.pop("export")["check"]
    assert card == card_for("enet")
    assert check["max_abs_difference"] == result.report.max_abs_difference
    assert check["tolerance"] == 1e-4
    assert "phantom site B" in check["inputs"]  # the first training site that is a phantom site


def test_enet_switches_are_pinned_and_counted(exported: dict[str, Exported]) -> None:
    comparison = exported["enet"].report.comparison
    # the pinned difference can only be smaller: switch flips are what it leaves out
    assert comparison.max_abs_difference <= comparison.end_to_end_max_abs_difference + 1e-7
    assert comparison.label_agreement > 0.999
    assert exported["unetpp"].report.comparison.switch_flips == 0


def test_existing_output_is_refused_without_overwrite(
    exported: dict[str, Exported], capsys: pytest.CaptureFixture[str]
) -> None:
    result = exported["espnet"]
    before = result.onnx.read_bytes()
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_onnx(result.keras, result.onnx)
    assert main(["export", str(result.keras), "--out", str(result.onnx)]) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert result.onnx.read_bytes() == before


def test_failed_check_fails_the_export_with_the_number_and_writes_nothing(
    exported: dict[str, Exported], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disagreeing(*args: object, **kwargs: object) -> Comparison:
        return Comparison(0.25, 0.25, 0, 0, 0.9)

    converted = onnx.load(exported["unetpp"].onnx)
    monkeypatch.setattr(onnx_export, "_convert", lambda network, opset: converted)
    monkeypatch.setattr(onnx_export, "compare_with_keras", disagreeing)
    out = tmp_path / "unetpp.onnx"
    with pytest.raises(
        ExportError, match=r"differ by up to 0\.25, more than the tolerance 0\.0001"
    ):
        export_onnx(exported["unetpp"].keras, out)
    assert list(tmp_path.iterdir()) == []


def test_export_command_prints_its_check(exported_by_command: tuple[int, str, Path]) -> None:
    code, printed, out = exported_by_command
    assert code == 0
    report = json.loads(printed)
    assert report["path"] == str(out)
    assert report["comparison"]["max_abs_difference"] <= 1e-4
    assert report["checker_passed"] is True
    assert set(report["seconds"]) == {"convert", "check", "write"}
    assert load_model(out).card["architecture"] == "espnet"


def test_exported_student_segments_a_real_scan_on_its_grid(
    exported: dict[str, Exported],
    promise12_case: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scan, truth = promise12_case
    out = tmp_path / "Case00_mask.nii.gz"
    args = ["segment", str(exported["enet"].onnx), str(scan), "--out", str(out), "--gt", str(truth)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"read [0-9.]+, preprocess [0-9.]+, infer [0-9.]+", text)
    assert "Dice " in text
    written, source = nib.load(out), nib.load(scan)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)


def test_keras_models_segment_too_and_agree_with_onnx(
    exported: dict[str, Exported], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from napari_kdseg.data.nifti import write_nifti
    from napari_kdseg.data.phantom import make_case

    result = exported["erfnet"]
    batch = np.random.default_rng(1).standard_normal((4, SIZE, SIZE, 3)).astype(np.float32)
    from_onnx = load_model(result.onnx, threads=1, batch_size=3).predict(batch)
    from_keras = load_model(result.keras, batch_size=3).predict(batch)
    np.testing.assert_allclose(from_onnx, from_keras, atol=1e-4)

    scan = write_nifti(make_case("B", 1, size=SIZE)[0], tmp_path / "scan.nii.gz")
    masks = {}
    for model in (result.keras, result.onnx):
        masks[model.suffix] = tmp_path / f"mask{model.suffix}.nii.gz"
        assert main(["segment", str(model), str(scan), "--out", str(masks[model.suffix])]) == 0
    assert "runtime: keras/" in capsys.readouterr().out
    keras_mask, onnx_mask = (np.asarray(nib.load(path).dataobj) for path in masks.values())
    assert keras_mask.shape == nib.load(scan).shape
    assert np.mean(keras_mask == onnx_mask) > 0.999
