"""Choose a distillation recipe on the training sites' validation split (issue 15, part 3).

Each candidate changes one setting of a finished seeded ``kdseg loso`` folder (the base: the
demo's recipe). For every (target, seed) asked for, it trains the distilled student under the
candidate and, where the candidate changes them, its teacher and student alone; cells the
candidate leaves unchanged are linked from the base folder, not trained again. Each candidate
gets its own grid folder under ``OUT``, so ``grid.json`` pins its settings and a rerun resumes.

The choice is made on the validation Dice of the training sites' held-out cases only
(``best_val_dice`` on each model card); the unseen site's Dice is printed beside it for the
record and must not be used to choose. The rule, written down when only the first five
runs of one candidate (aam-0.1) were in: the highest mean validation Dice of the distilled
student wins; candidates within 0.01 of it count as tied, and a tie goes to the one that
changes the paper's recipe least (its weights kept highest), since a candidate that only
switches distillation down would otherwise win by matching the student alone.

    .venv/bin/python bench/kd_tune.py runs/study-F runs/tune --targets A C E --seeds 0 1
    .venv/bin/python bench/kd_tune.py runs/study-F runs/tune --report   # table only
    .venv/bin/python bench/kd_tune.py runs/study-F runs/tune --candidates aam-0.1 \
        --ablate F --seeds 0 1 2                                          # Table 4 on F
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_kdseg.card import ModelCard
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import discover
from napari_kdseg.distillation import terms
from napari_kdseg.experiments.grid import Cell, CellResult, Grid, ablation_cells
from napari_kdseg.experiments.report import (
    gain_rows,
    table2_rows,
    table4_rows,
    write_grid_report,
)
from napari_kdseg.training.config import TrainConfig

Configs = tuple[TrainConfig, TrainConfig]  # (teacher, student)


def _distillation(**changes: object) -> Callable[[Configs], Configs]:
    def change(configs: Configs) -> Configs:
        teacher, student = configs
        distillation = dataclasses.replace(student.distillation, **changes)
        return teacher, dataclasses.replace(student, distillation=distillation)

    return change


def _lambdas(**weights: float) -> Callable[[Configs], Configs]:
    def change(configs: Configs) -> Configs:
        teacher, student = configs
        lambdas = student.distillation.lambdas | weights
        return _distillation(lambdas=lambdas)((teacher, student))

    return change


def _student(**changes: object) -> Callable[[Configs], Configs]:
    return lambda configs: (configs[0], dataclasses.replace(configs[1], **changes))


def _teacher(**changes: object) -> Callable[[Configs], Configs]:
    return lambda configs: (dataclasses.replace(configs[0], **changes), configs[1])


def _then(*changes: Callable[[Configs], Configs]) -> Callable[[Configs], Configs]:
    def change(configs: Configs) -> Configs:
        for step in changes:
            configs = step(configs)
        return configs

    return change


#: Every candidate tried, by name: one change each against the base recipe.
CANDIDATES: dict[str, Callable[[Configs], Configs]] = {
    "base": lambda configs: configs,
    "aam-0.1": _lambdas(affinity=0.1),
    "aam-0.3": _lambdas(affinity=0.3),
    # second round, from the first round's best by validation (aam-0.1): more of the
    # teacher's own outputs, the term that transfers its function most directly
    "aam-0.1-lm-1": _lambdas(affinity=0.1, logits=1.0),
    "aam-margin-1": _distillation(affinity_margin=1.0),
    "aam-size-1": _distillation(affinity_sizes=(1,)),
    "lm-temperature-4": _distillation(temperature=4.0),
    "ramp-half": _distillation(ramp_fraction=0.5),
    "student-24-epochs": _student(epochs=24),
    "teacher-half-width": _teacher(width=0.5),
    # third round, from the chosen recipe: the levers the second round left untried
    "aam-0.1-lm-1-student-24": _then(_lambdas(affinity=0.1, logits=1.0), _student(epochs=24)),
    "aam-0.1-lm-1-teacher-half": _then(_lambdas(affinity=0.1, logits=1.0), _teacher(width=0.5)),
    "aam-0.1-lm-1-deeplabv3plus": _lambdas(affinity=0.1, logits=1.0),  # the other teacher
    "aam-0.1-lm-1-teacher-12": _then(_lambdas(affinity=0.1, logits=1.0), _teacher(epochs=12)),
}

#: The teacher network of each candidate that does not distil from UNet++.
TEACHER_MODELS = {"aam-0.1-lm-1-deeplabv3plus": "deeplabv3plus"}


def _base_configs(base: Path) -> tuple[Path, Configs]:
    pinned = json.loads((base / "grid.json").read_text())
    return Path(pinned["dataset"]), (
        TrainConfig.from_json(pinned["teacher"]),
        TrainConfig.from_json(pinned["student"]),
    )


def _link(base: Path, out: Path, cell: Cell) -> None:
    """Reuse a finished cell of the base folder instead of training it again."""
    source, target = base / cell.folder, out / cell.folder
    if target.exists() or not (source / "result.json").exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve(), target_is_directory=True)


def run(
    base: Path,
    out: Path,
    names: list[str],
    targets: list[str],
    seeds: list[int],
    cache_dir: Path | None = None,
) -> None:
    dataset_root, base_configs = _base_configs(base)
    dataset = discover(dataset_root)
    base_teacher, base_student = base_configs
    student_name = "enet"
    for name in names:
        teacher_name = TEACHER_MODELS.get(name, "unetpp")
        teacher, student = CANDIDATES[name](base_configs)
        folder = out / name
        grid = Grid(dataset, folder, teacher, student, PreprocessCache(cache_dir))
        same_student = (
            dataclasses.replace(student, distillation=base_student.distillation) == base_student
        )
        cells = []
        for target in targets:
            for seed in seeds:
                teacher_cell = Cell(target, teacher_name, seed=seed)
                student_cell = Cell(target, student_name, seed=seed)
                distilled = Cell(
                    target, student_name, teacher_name, tuple(terms.PAPER_TERMS), seed=seed
                )
                if teacher == base_teacher:
                    _link(base, folder, teacher_cell)
                if same_student:
                    _link(base, folder, student_cell)
                if name == "base":
                    _link(base, folder, distilled)
                cells += [teacher_cell, student_cell, distilled]
        print(f"== {name}: {len(cells)} cells in {folder}", flush=True)
        grid.run(cells)


def ablate(
    base: Path, out: Path, name: str, target: str, seeds: list[int], cache_dir: Path | None
) -> None:
    """Table 4 under candidate ``name`` on one target: every combination of the terms at the
    candidate's weights, the teacher and the student alone linked from the base folder and
    the three-term row from the candidate's own grid (run it first)."""
    dataset_root, base_configs = _base_configs(base)
    teacher, student = CANDIDATES[name](base_configs)
    folder = out / f"{name}-ablation-{target}"
    grid = Grid(discover(dataset_root), folder, teacher, student, PreprocessCache(cache_dir))
    cells = ablation_cells([target], TEACHER_MODELS.get(name, "unetpp"), "enet", seeds)
    for cell in cells:
        if cell.teacher is None and teacher == base_configs[0]:
            _link(base, folder, cell)  # the teacher, and the student alone (student unchanged)
        elif set(cell.losses) == set(terms.PAPER_TERMS):
            _link(out / name, folder, cell)
    print(f"== ablation of {name} on {target}: {len(cells)} cells in {folder}", flush=True)
    results = grid.run(cells)
    written = write_grid_report(results, [target], folder, "table4")
    print(written["table"].read_text())
    for label, by_target in gain_rows(table4_rows(results), [target]):
        gain = by_target[target]
        if gain is not None:
            print(f"- {label}: {gain.sentence()}")


def report(out: Path, targets: list[str], seeds: list[int]) -> None:
    """Per candidate, over the runs of ``targets`` x ``seeds``: validation Dice (the
    criterion) and unseen-site Dice (the record)."""
    print(
        "| candidate | runs | val w/ | val w/ - w/o | unseen w/ | unseen w/ - w/o "
        "(95% interval) | val teacher |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in CANDIDATES:
        folder = out / name
        if not folder.is_dir():
            continue
        runs: dict[tuple[str, int | None], dict[str, CellResult]] = {}
        for path in sorted(folder.glob("*/seed*/*/result.json")):  # through the links
            result = CellResult.from_json(json.loads(path.read_text()))
            cell = result.cell
            kind = "teacher" if cell.role == "teacher" else ("w/" if cell.losses else "w/o")
            if cell.target in targets and cell.seed in seeds:
                runs.setdefault((cell.target, cell.seed), {})[kind] = result
        complete = [run for run in runs.values() if len(run) == 3]
        if not complete:
            continue
        val = {k: np.array([_val(r[k]) for r in complete]) for k in ("teacher", "w/o", "w/")}
        results = [result for run in complete for result in run.values()]
        # the targets this candidate's runs cover (not `targets`, which filters every candidate)
        covered = sorted({result.cell.target for result in results})
        gain = next(by_target["all"] for _, by_target in gain_rows(table2_rows(results), covered))
        unseen = np.mean([r["w/"].summary()["mean"] for r in complete])
        print(
            f"| {name} | {len(complete)} | {val['w/'].mean():.3f} +- {val['w/'].std():.3f} | "
            f"{(val['w/'] - val['w/o']).mean():+.3f} | {unseen:.3f} | "
            f"{gain.mean:+.3f} ({gain.low:+.3f} to {gain.high:+.3f}) | "
            f"{val['teacher'].mean():.3f} |"
        )


def _val(result: CellResult) -> float:
    value = ModelCard.read_beside(Path(result.model_path)).best_val_dice
    return float("nan") if value is None else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="a finished seeded kdseg loso folder")
    parser.add_argument("out", type=Path, help="folder for the candidates' grids")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--targets", nargs="+", default=["A", "C", "E"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--cache-dir", type=Path, help="preprocessing cache (default: kdseg's)")
    parser.add_argument("--report", action="store_true", help="print the table, train nothing")
    parser.add_argument(
        "--ablate", metavar="TARGET", help="Table 4 for the one candidate given, on TARGET"
    )
    args = parser.parse_args()
    if args.ablate:
        if len(args.candidates) != 1:
            parser.error("--ablate takes exactly one --candidates")
        ablate(args.base, args.out, args.candidates[0], args.ablate, args.seeds, args.cache_dir)
        return
    if not args.report:
        run(args.base, args.out, args.candidates, args.targets, args.seeds, args.cache_dir)
    report(args.out, args.targets, args.seeds)


if __name__ == "__main__":
    main()
