"""A real (tiny) leave-one-site-out grid: trains, scores, reports, resumes, refuses mixing."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest

from napari_kdseg.cli import main
from napari_kdseg.data.augment import AugmentConfig
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.errors import DatasetError
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.data.preprocess import PreprocessConfig
from napari_kdseg.evaluation.protocol import Grid, GridStopped, check_targets, loso_cells
from napari_kdseg.evaluation.report import write_grid_report
from napari_kdseg.export.students import export_students
from napari_kdseg.inference.model import ModelFileError
from napari_kdseg.inference.onnx_runtime import load_onnx
from napari_kdseg.training.config import TrainConfig

TINY = TrainConfig(
    width=0.125,
    preprocess=PreprocessConfig(size=32, context=3),
    epochs=1,
    batch_size=8,
    learning_rate=3e-3,
    cycle_step_size=20,
    augment=AugmentConfig(),
    validation_fraction=0.34,
)


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list]:
    root = tmp_path_factory.mktemp("grid")
    data = generate_phantom(root / "data", cases_per_site=3, size=48, seed=0, sites="AB")
    grid = Grid(discover(data), root / "out", TINY, TINY, PreprocessCache(root / "cache"))
    results = grid.run(loso_cells(["B"], ["unetpp"], ["enet"]))
    return data, root, results


def test_grid_trains_scores_and_reports(finished_grid: tuple[Path, Path, list]) -> None:
    _, root, results = finished_grid
    assert [r.cell.variant for r in results] == ["teacher", "w/o", "+AAM + KMM + LM"]
    for result in results:
        assert result.summary()["n"] == 3  # every case of the unseen site B
        assert 0.0 <= result.summary()["mean"] <= 1.0
        saved = json.loads((root / "out" / result.cell.folder / "result.json").read_text())
        assert saved["cell"]["target"] == "B"
        card = json.loads(Path(result.model_path).with_suffix(".json").read_text())
        assert card["training_sites"] == ["A"]  # the target never trains
    distilled_card = json.loads(Path(results[2].model_path).with_suffix(".json").read_text())
    assert distilled_card["teacher"].endswith("B/unetpp/unetpp.keras")
    paths = write_grid_report(results, ["B"], root / "out", "table2")
    assert "| T2: UNet++ |" in paths["table"].read_text()


def _training_starts(capsys: pytest.CaptureFixture[str]) -> int:
    """How many trainings began, from the JSON-lines progress they print."""
    lines = capsys.readouterr().out.splitlines()
    return sum(json.loads(line)["event"] == "start" for line in lines if line[:1] == "{")


def test_running_again_skips_finished_cells_and_only_scores_unscored_ones(
    finished_grid: tuple[Path, Path, list], capsys: pytest.CaptureFixture[str]
) -> None:
    data, root, results = finished_grid
    events: list[tuple[str, dict]] = []
    grid = Grid(
        discover(data),
        root / "out",
        TINY,
        TINY,
        PreprocessCache(root / "cache"),
        on_event=lambda event, **fields: events.append((event, fields)),
    )
    student = root / "out" / results[1].cell.folder
    (student / "result.json").unlink()  # as if the process died after training, before scoring
    model_time = (student / "enet.keras").stat().st_mtime_ns
    again = grid.run(loso_cells(["B"], ["unetpp"], ["enet"]))
    done = [fields for event, fields in events if event == "cell_done"]
    assert [d["skipped"] for d in done] == [True, False, True]
    assert _training_starts(capsys) == 0  # nothing was trained
    assert (student / "enet.keras").stat().st_mtime_ns == model_time
    assert again[1].summary() == results[1].summary()


def test_other_settings_in_the_same_folder_are_refused(
    finished_grid: tuple[Path, Path, list],
) -> None:
    data, root, _ = finished_grid
    with pytest.raises(ValueError, match=r"grid\.json: .*\(student epochs differ\)"):
        Grid(discover(data), root / "out", TINY, dataclasses.replace(TINY, epochs=3))
    other = dataclasses.replace(TINY, preprocess=PreprocessConfig(size=64, context=3))
    with pytest.raises(ValueError, match="must share the preprocessing"):
        Grid(discover(data), root / "out2", TINY, other)


def test_one_site_cannot_be_left_out(tmp_path: Path) -> None:
    data = generate_phantom(tmp_path / "one", cases_per_site=1, size=32, seed=0, sites="C")
    with pytest.raises(DatasetError, match="needs two or more sites, found 1 \\(C\\)"):
        check_targets(discover(data), ["C"])


def test_evaluate_command_prints_cases_and_sites(
    finished_grid: tuple[Path, Path, list], capsys: pytest.CaptureFixture[str]
) -> None:
    data, root, results = finished_grid
    model = results[0].model_path
    cache = str(root / "cache")
    assert main(["evaluate", model, str(data), "--sites", "B", "--cache-dir", cache]) == 0
    text = capsys.readouterr().out
    assert "B       Case01" in text
    assert text.strip().splitlines()[-1].startswith("all")
    assert main(["evaluate", model, str(data), "--json", "--cache-dir", cache]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["sites"]) == ["A", "B"]
    assert report["overall"]["dice"]["n"] == 6
    assert main(["evaluate", model, str(data), "--sites", "Z"]) == 2
    assert "no site named 'Z'" in capsys.readouterr().err


def test_students_export_once_to_the_library_and_never_replace_a_file(
    finished_grid: tuple[Path, Path, list],
) -> None:
    data, root, results = finished_grid
    library = root / "library"
    events: list[tuple[str, dict]] = []
    paths = export_students(results, discover(data), library, lambda e, **f: events.append(f))
    assert [p.name for p in paths] == [
        "enet-unseen-B.onnx",
        "enet-from-unetpp-AAM-KMM-LM-unseen-B.onnx",
    ]
    assert all(not fields["skipped"] and fields["max_abs_difference"] < 1e-4 for fields in events)
    card = load_onnx(paths[1]).card
    assert card["training_sites"] == ["A"]
    assert export_students(results, discover(data), library) == paths  # remembered, not redone
    (Path(results[1].model_path).parent / "exported.json").unlink()
    again = export_students(results[:2], discover(data), library)
    assert again == [library / "enet-unseen-B-2.onnx"]  # the first file is kept
    assert paths[0].is_file()


def test_a_teacher_trained_elsewhere_must_match_the_students(
    finished_grid: tuple[Path, Path, list],
) -> None:
    """Its use in a grid is exercised by the ``loso --teacher-file`` test below."""
    data, root, results = finished_grid
    teacher = Path(results[0].model_path)
    other = dataclasses.replace(TINY, preprocess=PreprocessConfig(size=64, context=3))
    with pytest.raises(ModelFileError, match="trained on other inputs"):
        Grid(discover(data), root / "other", other, other, teacher_files=[teacher])
    with pytest.raises(ModelFileError, match="not a teacher"):
        Grid(discover(data), root / "other", TINY, TINY, teacher_files=[results[1].model_path])


def test_loso_cells_without_losses_train_students_alone() -> None:
    cells = loso_cells(["B"], ["unetpp"], ["enet", "erfnet"], losses=[])
    assert [cell.variant for cell in cells] == ["teacher", "w/o", "w/o"]
    with pytest.raises(ValueError, match="unknown distillation losses"):
        loso_cells(["B"], ["unetpp"], ["enet"], losses=["dice"])


def test_loso_command_with_a_given_teacher_and_lambdas(
    finished_grid: tuple[Path, Path, list], capsys: pytest.CaptureFixture[str]
) -> None:
    data, root, results = finished_grid
    out = root / "cli-grid"
    tiny = ["--size", "32", "--width", "0.125", "--epochs", "1", "--batch-size", "8"]
    argv = ["loso", str(data), "--targets", "B", "--students", "enet", "--out", str(out)]
    argv += ["--teacher-file", results[0].model_path, "--losses", "logits"]
    argv += ["--lambdas", "0.5", "0", "0", *tiny]  # --export-to: tests/gui/test_distill_panel
    argv += ["--progress-every", "1"]
    assert main([*argv, "--cache-dir", str(root / "cache")]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    starts = [e for e in events if e["event"] == "start"]
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == sum(s["steps_per_epoch"] * s["epochs"] for s in starts)  # every step
    cells = [e["variant"] for e in events if e["event"] == "cell"]
    assert cells == ["teacher", "w/o", "+LM"]
    card = json.loads((out / "B" / "enet-from-unetpp-LM" / "enet.json").read_text())
    assert card["losses"]["logits"] == 0.5
    assert card["teacher"] == results[0].model_path  # the given teacher taught it...
    assert len(starts) == 2  # ...and was not trained again: the two students only
    given = json.loads((out / "B" / "unetpp" / "result.json").read_text())
    assert given["model_path"] == results[0].model_path


def test_a_stop_between_trainings_ends_the_grid_after_the_current_cell(
    finished_grid: tuple[Path, Path, list],
) -> None:
    """SIGTERM while a cell is scored (not trained): the cell finishes, the grid stops cleanly."""
    data, root, _ = finished_grid
    done: list[str] = []
    before = signal.getsignal(signal.SIGTERM)

    def on_event(event: str, **fields: object) -> None:
        if event == "cell_done":
            done.append(str(fields["folder"]))
            if len(done) == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # the panel's Cancel

    grid = Grid(discover(data), root / "out", TINY, TINY, PreprocessCache(root / "cache"), on_event)
    with pytest.raises(GridStopped, match=r"stopped after B/unetpp; run the same command"):
        grid.run(loso_cells(["B"], ["unetpp"], ["enet"]))
    assert len(done) == 1
    assert signal.getsignal(signal.SIGTERM) == before  # the grid's handler is put back
