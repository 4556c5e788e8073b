"""End to end at a tiny size: the demo (phantom, teacher, student w/o and w/, scores, figure,
ONNX export, report) trained once, then everything that runs on its leave-one-site-out grid:
scoring, reports, resuming, exporting students, stopping, and refusing mixed settings.

One module, so the one training is shared (``make test`` spreads modules over workers).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from napari_kdseg.card import ModelFileError
from napari_kdseg.cli import main
from napari_kdseg.core.events import Event, captured, sent_to
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.data.preprocess import PreprocessConfig
from napari_kdseg.experiments.demo import DemoSettings, run_demo
from napari_kdseg.experiments.grid import Cell, Grid, GridStopped
from napari_kdseg.experiments.report import write_grid_report
from napari_kdseg.export.students import export_students
from napari_kdseg.inference.onnx_runtime import load_onnx
from napari_kdseg.training.config import TrainConfig

pytestmark = pytest.mark.slow  # trains or exports models: scheduled first (conftest)

SETTINGS = DemoSettings(
    target="B",
    cases_per_site=2,
    phantom_size=48,
    grid_size=32,
    teacher_epochs=1,
    student_epochs=1,
    seeds=(),  # one run: the seeded reports are tested in test_report.py
)


def test_the_default_demo_trains_each_model_once_per_seed() -> None:
    cells = DemoSettings().cells()
    assert [(c.seed, c.variant) for c in cells[:3]] == [
        (0, "teacher"),
        (0, "w/o"),
        (0, "+AAM + KMM + LM"),
    ]
    assert sorted({c.seed for c in cells}) == [0, 1, 2]
    assert len(cells) == 9
    for cell in cells:  # every distilled student learns from its own seed's teacher
        teacher = cell.teacher_cell()
        assert teacher is None or (teacher in cells and teacher.seed == cell.seed)


@dataclass
class FinishedDemo:
    """The demo run twice: what the first run wrote, and the events each run sent."""

    root: Path
    report: Path
    report_text: str
    events: list[str]
    rerun_report: Path
    rerun_events: list[str]


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory: pytest.TempPathFactory) -> FinishedDemo:
    root = tmp_path_factory.mktemp("demo")
    with captured() as events:
        report = run_demo(root, SETTINGS)
    text = report.read_text()
    with captured() as rerun_events:
        rerun = run_demo(root, SETTINGS)
    names = [event["event"] for event in events]
    rerun_names = [event["event"] for event in rerun_events]
    return FinishedDemo(root, report, text, names, rerun, rerun_names)


def test_demo_writes_an_honest_report(finished_demo: FinishedDemo) -> None:
    text = finished_demo.report_text
    assert "| T2: UNet++ |" in text
    assert "| ENet: w/o |" in text
    assert "| T2: w/ |" in text
    assert "AAM + KMM + LM (weights LM 1, KMM 0.9, AAM 0.1)" in text  # each named: the preset's
    assert "Distillation changed the student's Dice on the unseen site by" in text
    assert "95% bootstrap interval" in text
    assert "## Distilled against the student alone" not in text  # the demo says it in words
    assert "| Case00 |" in text
    assert "| **total** |" in text
    root = finished_demo.root
    assert (root / "contours.png").read_bytes()[:4] == b"\x89PNG"
    assert finished_demo.events.count("cell_done") == 3
    assert (root / "enet-distilled.onnx").stat().st_size > 0
    assert "exported to `enet-distilled.onnx`" in text
    assert "max abs logit difference not recorded" not in text


def test_running_the_demo_again_trains_nothing_and_keeps_the_report(
    finished_demo: FinishedDemo,
) -> None:
    assert finished_demo.rerun_events.count("cell_done") == 3
    assert "start" not in finished_demo.rerun_events  # every stage reused
    # With the first run's stage times the report comes out the same, so it is left alone.
    assert finished_demo.rerun_report == finished_demo.report
    assert finished_demo.report.read_text() == finished_demo.report_text
    assert not list(finished_demo.root.glob("*-2.*"))


@dataclass
class FinishedGrid:
    """The demo's grid (target B, UNet++ teacher, ENet w/o and w/): tiny and already run."""

    data: Path
    root: Path
    out: Path
    cache: PreprocessCache
    teacher: TrainConfig
    student: TrainConfig
    cells: list[Cell]
    results: list

    def reopen(self) -> Grid:
        """The same grid folder and settings, as a rerun of the command would open them."""
        return Grid(discover(self.data), self.out, self.teacher, self.student, self.cache)


@pytest.fixture(scope="module")
def finished_grid(finished_demo: FinishedDemo) -> FinishedGrid:
    root = finished_demo.root
    teacher, student = SETTINGS.train_config("teacher"), SETTINGS.train_config("student")
    cache = PreprocessCache(root / "cache")
    grid = FinishedGrid(
        root / "data", root, root / "grid", cache, teacher, student, SETTINGS.cells(), []
    )
    grid.results = grid.reopen().run(grid.cells)  # every cell is finished: read, not trained
    return grid


def test_grid_trains_scores_and_reports(finished_grid: FinishedGrid) -> None:
    results = finished_grid.results
    assert [r.cell.variant for r in results] == ["teacher", "w/o", "+AAM + KMM + LM"]
    for result in results:
        assert result.summary()["n"] == 2  # every case of the unseen site B
        assert 0.0 <= result.summary()["mean"] <= 1.0
        saved = json.loads((finished_grid.out / result.cell.folder / "result.json").read_text())
        assert saved["cell"]["target"] == "B"
        card = json.loads(Path(result.model_path).with_suffix(".json").read_text())
        assert card["training_sites"] == ["A", "C", "D", "E", "F"]  # the target never trains
    distilled_card = json.loads(Path(results[2].model_path).with_suffix(".json").read_text())
    assert distilled_card["teacher"].endswith("B/unetpp/unetpp.keras")
    paths = write_grid_report(results, ["B"], finished_grid.root / "report", "table2")
    assert "| T2: UNet++ |" in paths["table"].read_text()
    # Written again from the same cells: every file is already there, nothing new appears.
    assert write_grid_report(results, ["B"], finished_grid.root / "report", "table2") == paths
    assert not list((finished_grid.root / "report").glob("*-2.*"))


def test_running_again_skips_finished_cells_and_only_scores_unscored_ones(
    finished_grid: FinishedGrid,
) -> None:
    grid = finished_grid.reopen()
    results = finished_grid.results
    student = finished_grid.out / results[1].cell.folder
    (student / "result.json").unlink()  # as if the process died after training, before scoring
    model_time = (student / "enet.keras").stat().st_mtime_ns
    with captured() as events:
        again = grid.run(finished_grid.cells)
    done = [event for event in events if event["event"] == "cell_done"]
    assert [d["skipped"] for d in done] == [True, False, True]
    assert not [event for event in events if event["event"] == "start"]  # nothing was trained
    assert (student / "enet.keras").stat().st_mtime_ns == model_time
    assert again[1].summary() == results[1].summary()


def test_other_settings_in_the_same_folder_are_refused(finished_grid: FinishedGrid) -> None:
    data, teacher, student = (
        discover(finished_grid.data),
        finished_grid.teacher,
        finished_grid.student,
    )
    with pytest.raises(ValueError, match=r"grid\.json: .*\(student epochs differ\)"):
        Grid(data, finished_grid.out, teacher, dataclasses.replace(student, epochs=3))
    other = dataclasses.replace(student, preprocess=PreprocessConfig(size=64, context=3))
    with pytest.raises(ValueError, match="must share the preprocessing"):
        Grid(data, finished_grid.root / "out2", teacher, other)


def test_a_setting_added_since_the_folder_was_made_counts_at_its_default(
    finished_grid: FinishedGrid, tmp_path: Path
) -> None:
    data, teacher, student = (
        discover(finished_grid.data),
        finished_grid.teacher,
        finished_grid.student,
    )
    out = tmp_path / "older"
    Grid(data, out, teacher, student)
    pinned = json.loads((out / "grid.json").read_text())
    for role in ("teacher", "student"):  # as written before ramp_fraction existed
        del pinned[role]["distillation"]["ramp_fraction"]
    (out / "grid.json").write_text(json.dumps(pinned))
    Grid(data, out, teacher, student)  # accepted: its cells trained without a ramp
    ramped = dataclasses.replace(
        student, distillation=dataclasses.replace(student.distillation, ramp_fraction=0.5)
    )
    with pytest.raises(ValueError, match=r"\(student distillation differ\)"):
        Grid(data, out, teacher, ramped)


def test_evaluate_command_prints_cases_and_sites(
    finished_grid: FinishedGrid, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = finished_grid.results[0].model_path, str(finished_grid.data)
    cache = str(finished_grid.cache.root)
    assert main(["evaluate", model, data, "--sites", "B", "--cache-dir", cache]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["B", "Case01"] in [row[:2] for row in rows]  # the case table, columns apart
    assert ["all", "2"] in [row[:2] for row in rows]  # the summary: site B's 2 cases
    assert main(["evaluate", model, data, "--json", "--cache-dir", cache]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["sites"]) == ["A", "B", "C", "D", "E", "F"]
    assert report["overall"]["dice"]["n"] == 12
    assert main(["evaluate", model, data, "--sites", "Z"]) == 2
    assert "no site named 'Z'" in capsys.readouterr().err


def test_students_export_once_to_the_library_and_never_replace_a_file(
    finished_grid: FinishedGrid,
) -> None:
    results, data = finished_grid.results, discover(finished_grid.data)
    library = finished_grid.root / "library"
    with captured() as events:
        paths = export_students(results, data, library)
    assert [p.name for p in paths] == [
        "enet-unseen-B.onnx",
        "enet-from-unetpp-AAM-KMM-LM-unseen-B.onnx",
    ]
    assert all(not fields["skipped"] and fields["max_abs_difference"] < 1e-4 for fields in events)
    card = load_onnx(paths[1]).card
    assert card["training_sites"] == ["A", "C", "D", "E", "F"]
    assert export_students(results, data, library) == paths  # remembered, not redone
    (Path(results[1].model_path).parent / "exported.json").unlink()
    again = export_students(results[:2], data, library)
    assert again == [library / "enet-unseen-B-2.onnx"]  # the first file is kept
    assert paths[0].is_file()


def test_a_teacher_trained_elsewhere_must_match_the_students(finished_grid: FinishedGrid) -> None:
    """Its use in a grid is exercised by the ``loso --teacher-file`` test below."""
    data, root, results = discover(finished_grid.data), finished_grid.root, finished_grid.results
    teacher = Path(results[0].model_path)
    other = dataclasses.replace(
        finished_grid.student, preprocess=PreprocessConfig(size=64, context=3)
    )
    with pytest.raises(ModelFileError, match="trained on other inputs"):
        Grid(data, root / "other", other, other, teacher_files=[teacher])
    with pytest.raises(ModelFileError, match="not a teacher"):
        Grid(
            data,
            root / "other",
            finished_grid.teacher,
            finished_grid.student,
            teacher_files=[results[1].model_path],
        )


def test_loso_command_with_a_given_teacher_and_lambdas(
    finished_grid: FinishedGrid, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = finished_grid.results[0].model_path
    out = finished_grid.root / "cli-grid"
    tiny = ["--size", "32", "--width", "0.125", "--epochs", "1", "--batch-size", "8"]
    argv = ["loso", str(finished_grid.data), "--targets", "B", "--students", "enet"]
    argv += ["--out", str(out), "--teacher-file", teacher, "--losses", "logits"]
    argv += ["--lambdas", "0.5", "0", "0", *tiny]  # --export-to: tests/gui/test_distill_panel
    argv += ["--progress-every", "1", "--json", "--cache-dir", str(finished_grid.cache.root)]
    assert main(argv) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    starts = [e for e in events if e["event"] == "start"]
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == sum(s["steps_per_epoch"] * s["epochs"] for s in starts)  # every step
    cells = [e["variant"] for e in events if e["event"] == "cell"]
    assert cells == ["teacher", "w/o", "+LM"]
    card = json.loads((out / "B" / "enet-from-unetpp-LM" / "enet.json").read_text())
    assert card["losses"]["logits"] == 0.5
    assert card["teacher"] == teacher  # the given teacher taught it...
    assert len(starts) == 2  # ...and was not trained again: the two students only
    given = json.loads((out / "B" / "unetpp" / "result.json").read_text())
    assert given["model_path"] == teacher


def test_a_stop_between_trainings_ends_the_grid_after_the_current_cell(
    finished_grid: FinishedGrid,
) -> None:
    """SIGTERM while a cell is scored (not trained): the cell finishes, the grid stops cleanly."""
    done: list[str] = []
    before = signal.getsignal(signal.SIGTERM)

    def cancel_after_first_cell(event: Event) -> None:
        if event["event"] == "cell_done":
            done.append(str(event["folder"]))
            if len(done) == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # the panel's Cancel

    grid = finished_grid.reopen()
    with (
        sent_to(cancel_after_first_cell),
        pytest.raises(GridStopped, match=r"stopped after B/unetpp; run the same command"),
    ):
        grid.run(finished_grid.cells)
    assert len(done) == 1
    assert signal.getsignal(signal.SIGTERM) == before  # the grid's handler is put back
