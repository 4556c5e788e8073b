"""Grid reports are laid out like the paper's tables, from results made by hand."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from napari_kdseg.evaluation.metrics import summarise
from napari_kdseg.experiments.grid import (
    Cell,
    CellResult,
    ablation_cells,
    check_models,
    loso_cells,
)
from napari_kdseg.experiments.report import (
    markdown_table,
    table2_rows,
    table4_rows,
    write_grid_report,
)


def _result(cell: Cell, dice: list[float], hd95: list[float] | None = None) -> CellResult:
    hd95 = hd95 if hd95 is not None else [5.0] * len(dice)
    cases = [
        {"site": cell.target, "case": f"Case{i:02d}", "dice": d, "hd95": h, "asd": 1.0}
        for i, (d, h) in enumerate(zip(dice, hd95, strict=True))
    ]
    overall = {
        "dice": summarise(dice),
        "hd95": summarise(hd95),
        "asd": summarise([1.0] * len(dice)),
    }
    return CellResult(cell, {"cases": cases, "overall": overall}, 10.0, 1.0, "model.keras")


def test_cells_are_named_like_the_paper() -> None:
    cells = loso_cells(["A", "B"], ["deeplabv3plus", "unetpp"], ["enet"])
    assert [c.variant for c in cells[:5]] == [
        "teacher",
        "teacher",
        "w/o",
        "+AAM + KMM + LM",
        "+AAM + KMM + LM",
    ]
    assert len(cells) == 10
    assert str(cells[3].folder) == "A/enet-from-deeplabv3plus-AAM-KMM-LM"
    ablation = ablation_cells(["A"], "deeplabv3plus", "enet")
    assert [c.variant for c in ablation] == [
        "teacher",
        "w/o",
        "+LM",
        "+AAM",
        "+KMM",
        "+KMM + LM",
        "+AAM + LM",
        "+AAM + KMM",
        "+AAM + KMM + LM",
    ]
    assert len({c.folder for c in ablation}) == len(ablation)


def test_bad_model_choices_are_explained() -> None:
    with pytest.raises(ValueError, match="'enet' is not a teacher"):
        check_models(["enet"], ["espnet"])
    with pytest.raises(ValueError, match="a distilled cell names both"):
        Cell("A", "enet", "unetpp", ())


def test_table2_rows_and_values(tmp_path: Path) -> None:
    cells = loso_cells(["A", "B"], ["deeplabv3plus", "unetpp"], ["enet"])
    values = {"teacher": 0.9, "w/o": 0.6, "+AAM + KMM + LM": 0.8}
    results = [_result(cell, [values[cell.variant]] * 2) for cell in cells]
    # One empty prediction in a baseline cell: its HD95 is undefined and must say so.
    results[2] = _result(cells[2], [0.0, 0.6], [math.nan, 4.0])
    rows = table2_rows(results)
    assert [label for label, _ in rows] == [
        "T1: DeepLabV3+",
        "T2: UNet++",
        "ENet: w/o",
        "T1: w/",
        "T2: w/",
    ]
    dice = markdown_table(rows, ["A", "B"], "dice").splitlines()
    assert dice[0] == "| Dice | A | B | mean |"
    assert dice[2] == "| T1: DeepLabV3+ | 0.900 ± 0.000 | 0.900 ± 0.000 | 0.900 |"
    assert dice[4] == "| ENet: w/o | 0.300 ± 0.300 | 0.600 ± 0.000 | 0.450 |"
    hd95 = markdown_table(rows, ["A", "B"], "hd95").splitlines()
    assert "4.00 ± 0.00 (1 undef.)" in hd95[4]

    paths = write_grid_report(results, ["A", "B"], tmp_path, "table2")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["results"].open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(cells)
    assert table[2]["hd95_undefined"] == "1"
    with paths["cases"].open() as handle:
        assert len(list(csv.DictReader(handle))) == 2 * len(cells)
    assert "| T2: w/ |" in paths["table"].read_text()


def test_table4_rows_follow_the_paper_order() -> None:
    cells = ablation_cells(["C"], "deeplabv3plus", "enet")
    results = [_result(cell, [0.5]) for cell in cells]
    labels = [label for label, _ in table4_rows(results)]
    assert labels == [
        "Teacher: DeepLabV3+",
        "Student: ENet",
        "+LM",
        "+AAM",
        "+KMM",
        "+KMM + LM",
        "+AAM + LM",
        "+AAM + KMM",
        "+AAM + KMM + LM",
    ]
    table = markdown_table(table4_rows(results), ["C", "D"], "dice").splitlines()
    assert table[2] == "| Teacher: DeepLabV3+ | 0.500 ± 0.000 | – | – |"


def test_seeds_replicate_every_cell_in_its_own_folder_with_its_own_teacher() -> None:
    cells = loso_cells(["A"], ["unetpp"], ["enet"], seeds=[0, 1, 1])
    assert [(c.seed, c.variant) for c in cells] == [
        (0, "teacher"),
        (0, "w/o"),
        (0, "+AAM + KMM + LM"),
        (1, "teacher"),
        (1, "w/o"),
        (1, "+AAM + KMM + LM"),
    ]
    assert str(cells[5].folder) == "A/seed1/enet-from-unetpp-AAM-KMM-LM"
    assert cells[5].teacher_cell() == cells[3]
    assert str(loso_cells(["A"], ["unetpp"], ["enet"])[0].folder) == "A/unetpp"  # as before
    restored = CellResult.from_json(_result(cells[5], [0.5]).to_json())
    assert restored.cell == cells[5]


def test_seeded_report_gives_means_over_seeds_and_paired_gains(tmp_path: Path) -> None:
    alone = {0: [0.5, 0.6, 0.7], 1: [0.4, 0.6, 0.8]}
    gain = {0: [0.1, 0.1, 0.1], 1: [0.2, 0.0, 0.1]}
    results = []
    for seed in (0, 1):
        cells = loso_cells(["B"], ["unetpp"], ["enet"], seeds=[seed])
        results += [
            _result(cells[0], [0.9, 0.9, 0.9]),
            _result(cells[1], alone[seed]),
            _result(cells[2], [a + g for a, g in zip(alone[seed], gain[seed], strict=True)]),
        ]
    paths = write_grid_report(results, ["B"], tmp_path, "table2")
    table = paths["table"].read_text()
    # w/o: per-seed means 0.6 and 0.6 -> 0.600 ± 0.000 over 2 seeds
    assert "| ENet: w/o | 0.600 ± 0.000 (2 seeds) | 0.600 |" in table
    assert "## Distilled against the student alone" in table
    row = next(line for line in table.splitlines() if line.startswith("| T2: w/ |") and "[" in line)
    assert row.startswith("| T2: w/ | +0.100 [")  # the mean of the six paired differences
    with paths["results"].open() as handle:
        assert [r["seed"] for r in csv.DictReader(handle)] == ["0", "0", "0", "1", "1", "1"]
