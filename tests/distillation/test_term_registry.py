"""The registry of distillation terms, and everything that follows it: the configuration, the
command line, the job planner and the experiment grids (no Keras needed)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from napari_kdseg.distillation import terms
from napari_kdseg.distillation.terms import TermSpec
from napari_kdseg.experiments.grid import Cell, ablation_cells, ablation_losses, losses_label
from napari_kdseg.jobs.plan import DistillationSettings, loso_argv, validate
from napari_kdseg.training.config import DistillationConfig, TrainConfig

PAPER_LAMBDAS = {"logits": 0.2, "kernel_matrix": 0.9, "affinity": 0.9}


def _never_built(config: DistillationConfig, num_classes: int) -> None:
    raise AssertionError("planning never builds a term")


@pytest.fixture
def toy() -> Iterator[TermSpec]:
    """A fourth term, registered for one test."""
    spec = terms.register(TermSpec("toy", "TOY", 0.5, False, _never_built))
    yield spec
    terms.unregister("toy")


def test_the_paper_terms_in_order() -> None:
    assert terms.names() == terms.PAPER_TERMS == ("logits", "kernel_matrix", "affinity")
    assert terms.short_names() == {"logits": "LM", "kernel_matrix": "KMM", "affinity": "AAM"}
    assert terms.paper_lambdas() == PAPER_LAMBDAS
    assert [spec.needs_teacher_features for spec in terms.registered()] == [False, True, False]
    assert terms.get("kernel_matrix").build == (
        "napari_kdseg.losses.kernel_matrix:KernelMatrixTerm"
    )


def test_registration_is_refused_for_clashes_and_bad_names() -> None:
    with pytest.raises(ValueError, match="clashes with the registered 'logits'"):
        terms.register(TermSpec("logits", "LX", 1.0, False, _never_built))
    with pytest.raises(ValueError, match=r"clashes with the registered 'affinity' \(AAM\)"):
        terms.register(TermSpec("other", "AAM", 1.0, False, _never_built))
    with pytest.raises(ValueError, match="other than loss, segmentation, dice"):
        TermSpec("dice", "D", 1.0, False, _never_built)
    with pytest.raises(ValueError, match="default_weight must be > 0"):
        TermSpec("toy", "TOY", 0.0, False, _never_built)
    with pytest.raises(ValueError, match="letters and digits"):
        TermSpec("toy", "T-1", 1.0, False, _never_built)
    assert terms.names() == terms.PAPER_TERMS


def test_unknown_names_are_refused_with_the_registered_ones() -> None:
    message = r"unknown distillation losses \['style'\]; use \('logits', 'kernel_matrix', "
    with pytest.raises(ValueError, match=message):
        DistillationConfig(lambdas={"style": 1.0})
    with pytest.raises(ValueError, match=message):
        DistillationConfig().only(["style"])
    with pytest.raises(ValueError, match="unknown distillation losses"):
        terms.get("style")


def test_a_registered_term_is_opt_in(toy: TermSpec) -> None:
    assert terms.names()[-1] == "toy"
    config = DistillationConfig()
    assert config.lambdas == PAPER_LAMBDAS
    assert config.enabled == ["logits", "kernel_matrix", "affinity"]
    assert TrainConfig().to_json()["distillation"]["lambdas"] == PAPER_LAMBDAS
    # ablation cells list the paper's terms as before, and the toy only where it is on
    assert config.only(["affinity"]).lambdas == {
        "logits": 0.0,
        "kernel_matrix": 0.0,
        "affinity": 0.9,
    }
    assert config.only(["toy", "logits"]).lambdas == {
        "logits": 0.2,
        "kernel_matrix": 0.0,
        "affinity": 0.0,
        "toy": 0.5,
    }
    switched = DistillationConfig(lambdas={"toy": 2.0, "logits": 0.1})
    assert switched.enabled == ["logits", "toy"]  # registration order
    assert TrainConfig.from_json(TrainConfig(distillation=switched).to_json()).distillation == (
        switched
    )


def test_the_command_line_follows_the_registry(toy: TermSpec) -> None:
    from napari_kdseg.cli import _parser

    parser = _parser()
    args = parser.parse_args(["loso", "data", "--out", "o"])
    assert args.losses == ["logits", "kernel_matrix", "affinity"]  # the toy is opt-in
    args = parser.parse_args(
        ["loso", "data", "--out", "o", "--losses", "toy", "--lambdas", "0.2", "0.9", "0.9", "3"]
    )
    assert args.losses == ["toy"]
    assert args.lambdas == [0.2, 0.9, 0.9, 3.0]
    with pytest.raises(SystemExit):
        parser.parse_args(["loso", "data", "--out", "o", "--lambdas", "0.2", "0.9", "0.9"])


def test_the_planner_follows_the_registry(toy: TermSpec, tmp_path: Path) -> None:
    settings = DistillationSettings(dataset=Path("/data"), target="B", run_folder=tmp_path)
    assert settings.losses == terms.PAPER_TERMS
    assert settings.lambdas is None  # the preset's, which weigh a later term at its default
    assert settings.preset_values.lambdas[-1] == 0.5
    assert not [e for e in validate(settings, None).errors if "weight" in e]
    argv = loso_argv(dataclasses.replace(settings, lambdas=(0.2, 0.9, 0.9, 0.5)))
    assert argv[argv.index("--lambdas") + 1 :][:4] == ["0.2", "0.9", "0.9", "0.5"]
    toy_off = dataclasses.replace(settings, losses=("toy",), lambdas=(0.2, 0.9, 0.9, 0.0))
    assert "the weight of “TOY” must be above 0" in " ".join(validate(toy_off, None).errors)
    three = dataclasses.replace(settings, lambdas=(0.2, 0.9, 0.9))
    assert "give one weight per loss (LM, KMM, AAM, TOY)" in validate(three, None).errors


def test_ablation_rows_keep_the_paper_order_and_add_registered_terms() -> None:
    paper = [
        "+LM",
        "+AAM",
        "+KMM",
        "+KMM + LM",
        "+AAM + LM",
        "+AAM + KMM",
        "+AAM + KMM + LM",
    ]
    assert [losses_label(losses) for losses in ablation_losses()] == paper
    cells = ablation_cells(["B"], "deeplabv3plus", "enet")
    assert [str(cell.folder) for cell in cells[2:4]] == [
        "B/enet-from-deeplabv3plus-LM",
        "B/enet-from-deeplabv3plus-AAM",
    ]
    assert str(cells[-1].folder) == "B/enet-from-deeplabv3plus-AAM-KMM-LM"
    spec = terms.register(TermSpec("toy", "TOY", 0.5, False, _never_built))
    try:
        rows = ablation_losses()
        assert [losses_label(losses) for losses in rows[:7]] == paper
        assert len(rows) == 15  # every non-empty combination of four terms
        assert [losses_label(losses) for losses in rows[7:9]] == ["+TOY", "+LM + TOY"]
        assert losses_label(rows[-1]) == "+AAM + KMM + LM + TOY"
        assert str(Cell("B", "enet", "unetpp", ("toy", "logits")).folder) == (
            "B/enet-from-unetpp-LM-TOY"
        )
    finally:
        terms.unregister(spec.name)


def test_the_registry_loads_no_keras() -> None:
    code = (
        "import sys; from napari_kdseg.distillation import terms; "
        "import napari_kdseg.training.config; terms.paper_lambdas(); "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
