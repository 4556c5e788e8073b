"""ONNX models in ONNX Runtime and ``kdseg segment``, with hand-built graphs: no TensorFlow.

The graphs here are written with ``onnx.helper``, so these tests run without tf2onnx; the
exports of the real architectures are tested in ``tests/export``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest
import SimpleITK as sitk
from onnx import TensorProto, helper

from napari_kdseg.card import CARD_METADATA_KEY, ModelFileError
from napari_kdseg.cli import main
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.nifti import write_nifti
from napari_kdseg.data.phantom import make_case
from napari_kdseg.inference import onnx_runtime
from napari_kdseg.inference.loading import load_model
from napari_kdseg.inference.onnx_runtime import CPU, CUDA, default_providers, load_onnx

SIZE = 32
CARD = {
    "format": "napari-kdseg model card 1",
    "architecture": "threshold",
    "input": {"size": SIZE, "channels": 3, "layout": "NHWC"},
    "preprocess": {"size": SIZE, "context": 3, "orientation": "LPS"},
    "class_names": ["background", "prostate"],
}


def threshold_onnx(path: Path, card: dict | None = CARD, size: int = SIZE) -> Path:
    """A stand-in segmentation graph: 'prostate' where the centre slice is above 0.5 (z-score)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", size, size, 3])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", size, size, 2])
    constants = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [1]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [2]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [3]),
        helper.make_tensor("level", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("gain", TensorProto.FLOAT, [], [8.0]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["centre"]),
        helper.make_node("Sub", ["centre", "level"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "gain"], ["prostate"]),
        helper.make_node("Mul", ["centre", "zero"], ["background"]),
        helper.make_node("Concat", ["background", "prostate"], ["logits"], axis=3),
    ]
    graph = helper.make_graph(nodes, "threshold", [image], [logits], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if card is not None:
        helper.set_model_props(model, {CARD_METADATA_KEY: json.dumps(card)})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return threshold_onnx(tmp_path_factory.mktemp("onnx") / "threshold.onnx")


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("phantom")
    image, label = make_case("C", 0, size=64, seed=0)
    return (
        write_nifti(image, folder / "Case00.nii.gz"),
        write_nifti(label, folder / "Case00_segmentation.nii.gz"),
    )


def test_onnx_model_reads_its_card_and_predicts(model_file: Path) -> None:
    model = load_model(model_file, threads=1, batch_size=2)
    assert model.card == CARD
    assert model.preprocess.size == SIZE
    assert model.class_names == ["background", "prostate"]
    assert model.runtime.startswith("onnxruntime ")
    assert "CPUExecutionProvider, 1 thread(s)" in model.runtime
    batch = np.random.default_rng(0).standard_normal((5, SIZE, SIZE, 3)).astype(np.float32)
    logits = model.predict(batch)  # three runs of 2, 2 and 1 slices: a dynamic batch
    assert logits.shape == (5, SIZE, SIZE, 2)
    np.testing.assert_allclose(logits[..., 1], 8 * (batch[..., 1] - 0.5), rtol=1e-6)


def test_cuda_comes_first_when_onnx_runtime_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_runtime.ort, "get_available_providers", lambda: [CUDA, CPU])
    assert default_providers() == [CUDA, CPU]
    monkeypatch.setattr(onnx_runtime.ort, "get_available_providers", lambda: [CPU])
    assert default_providers() == [CPU]


def test_bad_onnx_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "noise.onnx").write_bytes(b"\x00 not a protobuf at all")
    with pytest.raises(ModelFileError, match=r"noise\.onnx: not a usable ONNX model"):
        load_onnx(tmp_path / "noise.onnx")
    truncated = threshold_onnx(tmp_path / "whole.onnx").read_bytes()[:-40]
    (tmp_path / "truncated.onnx").write_bytes(truncated)
    with pytest.raises(ModelFileError, match="not a usable ONNX model"):
        load_onnx(tmp_path / "truncated.onnx")
    with pytest.raises(ModelFileError, match="without a napari-kdseg model card"):
        load_onnx(threshold_onnx(tmp_path / "cardless.onnx", card=None))
    with pytest.raises(ModelFileError, match="not a napari-kdseg model card"):
        load_onnx(threshold_onnx(tmp_path / "foreign.onnx", card={"format": "other"}))
    with pytest.raises(ModelFileError, match=r"does not match the card's \(batch, 32, 32, 3\)"):
        load_onnx(threshold_onnx(tmp_path / "resized.onnx", size=16))
    with pytest.raises(ValueError, match="threads must be >= 1"):
        load_onnx(tmp_path / "whole.onnx", threads=0)


def _segment(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["segment", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_segment_writes_the_mask_on_the_source_grid_with_scores(
    model_file: Path,
    phantom_files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scan, truth = phantom_files
    out = tmp_path / "mask.nii.gz"
    code, text, _ = _segment(
        [str(model_file), str(scan), "--out", str(out), "--gt", str(truth)], capsys
    )
    assert code == 0
    for stage in ("read", "preprocess", "infer", "postprocess", "write", "total"):
        assert f"{stage} " in text
    assert "CPUExecutionProvider" in text
    assert re.search(r"Dice [0-9.]+, HD95 [0-9.]+ mm, ASD [0-9.]+ mm", text)
    written, source = nib.load(out), nib.load(scan)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert written.get_data_dtype() == np.uint8

    code, text, _ = _segment(
        [str(model_file), str(scan), "--out", str(out), "--overwrite", "--json", "--tta"], capsys
    )
    report = json.loads(text)
    assert code == 0
    assert report["tta"] is True
    assert set(report["seconds"]) >= {"read", "preprocess", "infer", "postprocess", "write"}
    assert report["shape"] == list(read_volume(scan).shape)


def test_segment_refuses_to_overwrite(
    model_file: Path,
    phantom_files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"keep me")
    code, _, error = _segment([str(model_file), str(phantom_files[0]), "--out", str(out)], capsys)
    assert code == 2
    assert "already exists; pass --overwrite" in error
    assert out.read_bytes() == b"keep me"


def test_ground_truth_on_another_grid_is_refused(
    model_file: Path,
    phantom_files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    truth = read_volume(phantom_files[1], labels=True)
    cropped = tmp_path / "cropped.nii.gz"
    nib.save(nib.Nifti1Image(truth.file_order_array[:-2].astype(np.uint8), truth.affine), cropped)
    out = tmp_path / "mask.nii.gz"
    code, _, error = _segment(
        [str(model_file), str(phantom_files[0]), "--out", str(out), "--gt", str(cropped)], capsys
    )
    assert code == 2
    assert "differs from the scan's" in error
    assert not out.exists()


def test_segment_reads_metaimage(
    model_file: Path, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    scan = tmp_path / "Case00.mha"
    sitk.WriteImage(sitk.ReadImage(str(phantom_files[0])), str(scan))
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(model_file), str(scan), "--out", str(out)]) == 0
    assert read_volume(out, labels=True).same_grid(read_volume(scan))


def test_segment_reads_a_real_dicom_series(
    model_file: Path, dicom_series: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(model_file), str(dicom_series[0]), "--out", str(out)]) == 0
    assert read_volume(out, labels=True).same_grid(read_volume(dicom_series[0]))


def test_segment_of_an_onnx_model_imports_no_tensorflow(
    model_file: Path, phantom_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "mask.nii.gz"
    program = (
        "import json, sys\n"
        "from napari_kdseg.cli import main\n"
        f"code = main(['segment', {str(model_file)!r}, {str(phantom_files[0])!r}, "
        f"'--out', {str(out)!r}, '--json'])\n"
        "print(json.dumps({'code': code, 'loaded': sorted(m for m in ('tensorflow', 'keras', "
        "'tf2onnx') if m in sys.modules)}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    verdict = json.loads(run.stdout.strip().splitlines()[-1])
    assert verdict == {"code": 0, "loaded": []}
    assert out.exists()


SYNTHETIC_DATA = [{"site": "A", "origin": "synthetic", "cases": 4, "labelled": 4}]
WARNING = (
    "This model was trained only on synthetic scans; its output on a real scan is not reliable."
)


@pytest.fixture(scope="module")
def phantom_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in whose card says it learnt from the phantom alone."""
    folder = tmp_path_factory.mktemp("synthetic-only")
    return threshold_onnx(folder / "phantom-only.onnx", CARD | {"training_data": SYNTHETIC_DATA})


def test_a_model_of_the_phantom_alone_warns_on_a_real_scan(
    phantom_trained: Path,
    promise12_case: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "mask.nii.gz"
    code, text, _ = _segment(
        [str(phantom_trained), str(promise12_case[0]), "--out", str(out)], capsys
    )
    assert code == 0
    assert f"Warning: {WARNING}" in text
    code, text, _ = _segment(
        [str(phantom_trained), str(promise12_case[0]), "--out", str(out), "--overwrite", "--json"],
        capsys,
    )
    assert json.loads(text)["warnings"] == [WARNING]


def test_no_warning_on_a_phantom_case_or_for_a_card_that_does_not_say(
    phantom_trained: Path,
    model_file: Path,
    promise12_case: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from napari_kdseg.data.phantom import generate_phantom

    phantom = generate_phantom(tmp_path / "phantom", cases_per_site=1, size=32, sites="C")
    out = tmp_path / "mask.nii.gz"
    scan = phantom / "C" / "Case00.nii.gz"
    code, text, _ = _segment([str(phantom_trained), str(scan), "--out", str(out), "--json"], capsys)
    assert code == 0
    assert json.loads(text)["warnings"] == []
    # an older card, without the training data's origin, claims nothing either way
    code, text, _ = _segment(
        [str(model_file), str(promise12_case[0]), "--out", str(out), "--overwrite", "--json"],
        capsys,
    )
    assert json.loads(text)["warnings"] == []
