"""``kdseg distill`` from TAPS or a precomputed teacher, with scans without masks from another
folder: the choices in the help, and plain refusals before anything trains."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydicom
import pytest

from napari_kdseg.cli import main
from napari_kdseg.data.phantom import generate_phantom

SIZE = 32
TINY = ["--size", str(SIZE), "--width", "0.125", "--epochs", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "data"
    return generate_phantom(root, cases_per_site=2, size=SIZE, seed=0, sites="AB")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_help_names_taps_and_the_unlabelled_folders(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'taps' for TAPS, a 3D prostate model trained on real prostate MRI" in text
    assert "by its authors; MIT licence" in text
    assert "lavlab-taps 1.1.2" in text
    assert "--unlabelled FOLDER [FOLDER ...]" in text
    assert "--precompute-teacher" in text
    assert "scans without (a folder of DICOM series, say)" in text
    assert (
        "--distil-on {all,unlabelled} apply the teacher's terms to every scan (default), or "
        "only to the scans without a ground-truth mask" in text
    )


@pytest.mark.parametrize(
    ("teacher", "extra", "message"),
    [
        (
            "taps",
            [],
            "KMM needs the teacher's features, and TAPS gives its predictions only, no "
            "features; leave KMM out (for example --losses logits affinity)",
        ),
        (
            "TEACHER",
            ["--precompute-teacher"],
            "KMM needs the teacher's features, and a precomputed teacher "
            "(--precompute-teacher) gives its predictions only",
        ),
    ],
)
def test_kmm_from_a_teacher_without_features_is_refused_in_words(
    phantom: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    teacher: str,
    extra: list[str],
    message: str,
) -> None:
    if teacher == "TEACHER":
        teacher = str(tmp_path / "unetpp.keras")
        Path(teacher).write_bytes(b"only its name and suffix are checked before the losses")
    out = tmp_path / "out"
    args = ["distill", str(phantom), "--teacher", teacher, *extra, "--out", str(out)]
    code, _, error = run([*args, "--losses", "logits", "kernel_matrix", *TINY], capsys)
    assert code == 2
    assert message in error
    assert "Traceback" not in error
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            [],
            "--teacher-labels needs the teacher's predictions computed ahead: use --teacher "
            "taps or --precompute-teacher",
        ),
        (
            ["--precompute-teacher", "--lambdas", "1", "0", "0.1"],
            "--teacher-labels trains with the segmentation loss only unless --losses names",
        ),
        (
            ["--precompute-teacher", "--losses", "kernel_matrix"],
            "KMM needs the teacher's features",
        ),
        (
            ["--precompute-teacher", "--distil-on", "unlabelled"],
            "--distil-on unlabelled says which scans the distillation losses read, and none is "
            "on: name them with --losses",
        ),
    ],
)
def test_teacher_labels_are_refused_where_they_cannot_apply(
    phantom: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    teacher = tmp_path / "unetpp.keras"
    teacher.write_bytes(b"only its name and suffix are checked before the options")
    out = tmp_path / "out"
    args = ["distill", str(phantom), "--teacher", str(teacher), "--teacher-labels", *extra]
    code, _, error = run([*args, "--out", str(out), *TINY], capsys)
    assert code == 2
    assert message in error
    assert not out.exists()


def test_a_teacher_that_is_neither_taps_nor_a_keras_file_is_named(
    phantom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["distill", str(phantom), "--teacher", "tapz", "--out", str(tmp_path / "out")]
    code, _, error = run(args, capsys)
    assert code == 2
    assert (
        "--teacher tapz: expected an existing .keras teacher written by kdseg train, or 'taps'"
        in error
    )


def test_an_unlabelled_site_named_as_a_labelled_one_is_refused(
    phantom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["distill", str(phantom), "--teacher", "taps", "--unlabelled", str(phantom / "B")]
    code, _, error = run([*args, "--out", str(tmp_path / "out"), *TINY], capsys)
    assert code == 2
    assert "site name 'B' is also the name of" in error


@pytest.mark.slow
def test_training_alone_on_scans_without_masks_is_refused(
    dicom_series: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = dicom_series[0].parent
    cache = ["--cache-dir", str(tmp_path / "cache")]
    code, _, error = run(
        ["train", str(folder), "--out", str(tmp_path / "out"), *TINY, *cache], capsys
    )
    assert code == 2
    assert "has no labelled cases to train on" in error
    assert "unlabelled cases can only teach a student through distillation" in error


@pytest.mark.slow
def test_distilling_from_taps_with_an_unlabelled_dicom_folder(
    phantom: Path,
    dicom_series: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TAPS teaches a student on phantom site A and one real DICOM series without a mask, as
    the README's real-scan command does: the phantom learns from its masks, the series from
    TAPS (``--distil-on unlabelled``), so TAPS runs on the series alone (about 30 s on one
    core), into the teacher-map cache under the test's cache folder. The card says so, and
    the student goes into the library. (A teacher read on every scan, the default, is
    tested with a precomputed Keras teacher in tests/training.)"""
    unlabelled = tmp_path / "prostate3t"
    # the middle 8 of the series' 19 slices: half of TAPS's sliding windows, same plumbing
    series = unlabelled / dicom_series[0].name
    series.mkdir(parents=True)
    by_position = sorted(
        dicom_series[0].glob("*.dcm"),
        key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    for slice_file in by_position[6:14]:
        os.symlink(slice_file, series / slice_file.name)
    out, library = tmp_path / "student", tmp_path / "library"
    args = ["distill", str(phantom), "--sites", "A", "--teacher", "taps"]
    args += ["--unlabelled", str(unlabelled), "--out", str(out), "--export-to", str(library)]
    args += ["--distil-on", "unlabelled"]
    args += [*TINY, "--cache-dir", str(tmp_path / "cache"), "--json"]
    code, text, error = run(args, capsys)
    assert code == 0, error
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    maps = [e for e in events if e["event"] == "stage_done" and e["stage"] == "teacher maps"]
    assert [m["computed"] for m in maps] == [1]  # the DICOM series; no phantom case
    card = json.loads((out / "enet.json").read_text())
    assert card["teacher"] == "taps"
    assert card["teacher_model"]["description"] == "TAPS (lavlab-taps 1.1.2, ONNX)"
    assert card["teacher_model"]["precomputed"] is True
    assert len(card["teacher_model"]["model_blake2b"]) == 32
    assert card["training_data"] == [
        {"site": "A", "origin": "synthetic", "cases": 2, "labelled": 2},
        {"site": "prostate3t", "origin": "real", "cases": 1, "labelled": 0},
    ]
    assert set(card["losses"]) == {"segmentation", "logits", "affinity"}  # KMM off for TAPS
    taught = card["teacher_model"]["distillation_losses"]
    assert taught.startswith("applied only to the scans without a ground-truth mask")
    exported = [e for e in events if e["event"] == "exported"]
    assert [Path(e["path"]).name for e in exported] == ["student.onnx"]
    assert (library / "student.onnx").is_file()
