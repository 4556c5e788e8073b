"""The model card: written, read and checked in one place; cards round-trip byte for byte."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from napari_kdseg.card import (
    CARD_FORMAT,
    CARD_METADATA_KEY,
    ModelCard,
    ModelFileError,
    card_path_for,
)
from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.data.preprocess import PreprocessConfig
from napari_kdseg.data.provenance import SiteData
from napari_kdseg.training.config import TrainConfig

WHERE = Path("runs/enet/enet.json")

#: A card as training writes it (abridged ``training``), in training's key order.
TRAINED: dict[str, Any] = {
    "format": "napari-kdseg model card 1",
    "architecture": "enet",
    "width": 1.0,
    "input": {
        "size": 96,
        "channels": 3,
        "layout": "NHWC, channels are neighbouring slices centred on the predicted one",
    },
    "preprocess": {
        "size": 96,
        "context": 3,
        "orientation": "LPS",
        "normalisation": "z-score over the whole volume",
        "labels": "label > 0 is prostate",
    },
    "class_names": ["background", "prostate"],
    "training_sites": ["A", "B", "C"],
    "teacher": None,
    "losses": {"segmentation": "dice+ce"},
    "metrics": {"best_val_dice": 0.8125, "final": {"loss": 0.25, "val_dice": 0.75}},
    "training": {"model": "enet", "epochs": 6, "seconds": 12.5, "steps_per_epoch": 4},
    "software": {"napari_kdseg": "0.1.0", "keras": "3.0.0", "backend": "tensorflow"},
}

EXPORT = {
    "converter": "0.1.0 (tf2onnx 1.17.0)",
    "opset": 17,
    "check": {"tolerance": 0.0001, "inputs": "4 given input(s)", "max_abs_difference": 1e-06},
}


def dumped(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def test_a_trained_card_round_trips_byte_for_byte() -> None:
    card = ModelCard.from_json(TRAINED, WHERE)
    assert dumped(card.to_json()) == dumped(TRAINED)
    assert card.architecture == "enet"
    assert card.preprocess == PreprocessConfig(size=96, context=3, orientation="LPS")
    assert card.input_shape == (96, 96, 3)
    assert card.class_names == ("background", "prostate")
    assert card.training_sites == ("A", "B", "C")
    assert card.teacher is None
    assert card.best_val_dice == 0.8125
    assert card.training_seconds == 12.5


def test_the_exported_card_adds_export_last_and_round_trips() -> None:
    exported = ModelCard.from_json(TRAINED, WHERE).with_export(EXPORT)
    assert dumped(exported.to_json()) == dumped(TRAINED | {"export": EXPORT})
    metadata = exported.to_metadata()
    assert metadata == {CARD_METADATA_KEY: json.dumps(TRAINED | {"export": EXPORT})}
    again = ModelCard.from_metadata(metadata, "enet.onnx")
    assert again == exported
    assert again.export == EXPORT


def test_a_minimal_card_gains_no_sections() -> None:
    """Cards made by hand (tests, older tools) keep exactly the sections they have."""
    minimal = {
        "format": CARD_FORMAT,
        "preprocess": {"size": 32, "context": 3, "orientation": "LPS"},
    }
    card = ModelCard.from_json(minimal, WHERE)
    assert card.to_json() == minimal
    assert card.class_names is None
    assert card.best_val_dice is None
    assert card.training_seconds == 0.0


def test_unknown_keys_round_trip_in_place() -> None:
    newer = {"format": CARD_FORMAT, "architecture": "enet", "licence": {"name": "CC-BY"}}
    newer |= {"preprocess": {"size": 32, "context": 3, "orientation": "LPS", "bias": "N4"}}
    card = ModelCard.from_json(newer, WHERE)
    assert card.extra == {"licence": {"name": "CC-BY"}}
    assert card.preprocess_details == {"bias": "N4"}
    assert dumped(card.to_json()) == dumped(newer)
    assert dumped(card.with_export(EXPORT).to_json()) == dumped(newer | {"export": EXPORT})


def test_the_card_shares_nothing_mutable_with_its_data() -> None:
    data = copy.deepcopy(TRAINED)
    card = ModelCard.from_json(data, WHERE)
    data["metrics"]["best_val_dice"] = 0.0
    card.to_json()["losses"]["segmentation"] = "ce"
    assert card.to_json() == TRAINED


def broken(**changes: Any) -> dict[str, Any]:
    """The trained card with sections replaced (or removed, for ``None``)."""
    card = copy.deepcopy(TRAINED) | changes
    return {key: value for key, value in card.items() if value is not None}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([1, 2], "not a napari-kdseg model card (format 'list')"),
        (broken(format="other"), "not a napari-kdseg model card (format 'other')"),
        (broken(preprocess=None), "model card has no 'preprocess' section"),
        (broken(preprocess=[96, 3]), "model card has no 'preprocess' section"),
        (broken(preprocess={"context": 3}), "unusable 'preprocess': 'size' is missing"),
        (
            broken(preprocess={"size": "96", "context": 3}),
            "unusable 'preprocess': 'size' must be an integer, got '96'",
        ),
        (
            broken(preprocess={"size": 96, "context": 2}, input=None),
            "unusable 'preprocess': context must be an odd number of slices >= 1, got 2",
        ),
        (broken(architecture=5), "unusable 'architecture': expected a string, got a number"),
        (broken(width=True), "unusable 'width': expected a number, got true or false"),
        (broken(input=[96, 3]), "unusable 'input': expected an object, got a list"),
        (broken(input={"size": 96}), "unusable 'input': 'channels' is missing"),
        (broken(class_names="background"), "unusable 'class_names': expected a list, got a"),
        (broken(training_sites=["A", 2]), "unusable 'training_sites': expected a list of strings"),
        (broken(teacher=["t.keras"]), "unusable 'teacher': expected a string, got a list"),
        (broken(losses=0.9), "unusable 'losses': expected an object, got a number"),
        (broken(metrics={"best_val_dice": "0.8"}), "'best_val_dice' must be a number, got '0.8'"),
        (broken(training=[]), "unusable 'training': expected an object, got a list"),
        (broken(software="3.0"), "unusable 'software': expected an object, got a string"),
        (broken(export=[]), "unusable 'export': expected an object, got a list"),
        (broken(training_data={"A": 3}), "unusable 'training_data': expected a list"),
        (broken(training_data=["A"]), "unusable 'training_data': expected objects"),
        (
            broken(training_data=[{"site": "A", "origin": "made up", "cases": 3, "labelled": 3}]),
            "each site needs a name and an origin ('synthetic' or 'real')",
        ),
        (
            broken(training_data=[{"site": "A", "origin": "real", "cases": -1, "labelled": 0}]),
            "'cases' and 'labelled' must be counts",
        ),
        (broken(teacher_model="taps"), "unusable 'teacher_model': expected an object"),
    ],
)
def test_every_problem_names_the_file(data: Any, problem: str) -> None:
    with pytest.raises(ModelFileError) as raised:
        ModelCard.from_json(data, WHERE)
    assert raised.value.path == str(WHERE)
    assert str(raised.value).startswith(f"{WHERE}: ")
    assert problem in raised.value.problem
    assert isinstance(raised.value, KdsegDataError)


def test_the_two_stored_input_sizes_must_agree() -> None:
    data = broken(input={"size": 48, "channels": 3, "layout": "NHWC"})
    with pytest.raises(ModelFileError) as raised:
        ModelCard.from_json(data, WHERE)
    assert raised.value.path == str(WHERE)
    assert raised.value.problem == (
        "model card's two input sizes disagree: 'input' says 48 x 48 x 3, 'preprocess' says "
        "96 x 96 x 3"
    )


def test_unreadable_json_names_the_file() -> None:
    with pytest.raises(ModelFileError, match=r"enet\.json: unreadable model card: Expecting"):
        ModelCard.parse("{not json", WHERE)


def test_an_onnx_file_without_a_card_is_named() -> None:
    with pytest.raises(ModelFileError, match=r"^enet\.onnx: ONNX file without a napari-kdseg"):
        ModelCard.from_metadata({"other": "{}"}, "enet.onnx")


def test_input_shape_check() -> None:
    card = ModelCard.from_json(TRAINED, WHERE)
    card.check_input_shape((None, 96, 96, 3), "enet.keras")  # Keras: batch None
    card.check_input_shape(["batch", 96, 96, 3], "enet.onnx", what="graph input")  # ONNX
    card.check_input_shape((5, 96, 96, 3), "enet.keras", what="check inputs")  # a batch
    with pytest.raises(ModelFileError) as raised:
        card.check_input_shape(["batch", 32, 32, 3], "enet.onnx", what="graph input")
    assert str(raised.value) == (
        "enet.onnx: graph input (batch, 32, 32, 3) does not match the card's (batch, 96, 96, 3), "
        "that is (batch, size, size, context)"
    )
    with pytest.raises(ModelFileError, match=r"model input \(96, 96, 3\) does not match"):
        card.check_input_shape((96, 96, 3), "enet.keras")  # no batch dimension


def test_the_card_is_written_and_read_beside_the_model(tmp_path: Path) -> None:
    model = tmp_path / "enet.keras"
    with pytest.raises(ModelFileError) as raised:
        ModelCard.read_beside(model)
    assert str(raised.value) == (
        f"{model}: no model card beside it (expected enet.json, written by training)"
    )
    card = ModelCard.from_json(TRAINED, WHERE)
    assert card.write_beside(model) == card_path_for(model) == tmp_path / "enet.json"
    assert (tmp_path / "enet.json").read_text() == dumped(TRAINED)
    assert not list(tmp_path.glob(".*.tmp*"))
    assert ModelCard.read_beside(model) == card
    (tmp_path / "enet.json").write_text('{"format": "napari-kdseg model card 0"}')
    with pytest.raises(ModelFileError, match=r"enet\.json: not a napari-kdseg model card"):
        ModelCard.read_beside(model)


def test_reading_cards_imports_no_runtime_and_no_gui() -> None:
    """The viewer process reads cards: no Keras, TensorFlow, ONNX Runtime or Qt for that."""
    script = (
        "import sys; import napari_kdseg.card; "
        "heavy = [m for m in ('keras', 'tensorflow', 'onnxruntime', 'qtpy', 'PyQt5', 'PyQt6') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------- training's card

CONFIG = TrainConfig(model="enet", width=0.5, preprocess=PreprocessConfig(size=32), epochs=2)
HISTORY = {"loss": [0.9, 0.5], "dice": [0.25, 0.5], "val_loss": [0.8, 0.6], "val_dice": [0.5, 0.75]}
PLACEMENT = {"strategy": "default", "replicas": 1, "mixed_precision": False}
SOFTWARE = {"napari_kdseg": "0.1.0", "keras": "3.0.0", "backend": "tensorflow"}


TRAINING_DATA = [SiteData("A", "synthetic", 3, 3), SiteData("B", "real", 2, 0)]
KERAS_TEACHER = {
    "kind": "keras",
    "description": "unetpp (Keras)",
    "architecture": "unetpp",
    "file": "runs/unetpp/unetpp.keras",
    "file_blake2b": "0" * 32,
    "precomputed": False,
}


def expected_training_card(teacher: str | None, losses: dict[str, Any]) -> dict[str, Any]:
    """What training writes, spelled out (``training`` adds to the config's own JSON)."""
    return {
        "format": "napari-kdseg model card 1",
        "architecture": "enet",
        "width": 0.5,
        "input": {
            "size": 32,
            "channels": 3,
            "layout": "NHWC, channels are neighbouring slices centred on the predicted one",
        },
        "preprocess": {
            "size": 32,
            "context": 3,
            "orientation": "LPS",
            "normalisation": "z-score over the whole volume",
            "labels": "label > 0 is prostate",
        },
        "class_names": ["background", "prostate"],
        "training_sites": ["A", "B"],
        "training_data": [
            {"site": "A", "origin": "synthetic", "cases": 3, "labelled": 3},
            {"site": "B", "origin": "real", "cases": 2, "labelled": 0},
        ],
        "teacher": teacher,
        "teacher_model": None if teacher is None else KERAS_TEACHER,
        "losses": losses,
        "metrics": {
            "best_val_dice": 0.75,
            "final": {"loss": 0.5, "dice": 0.5, "val_loss": 0.6, "val_dice": 0.75},
        },
        "training": CONFIG.to_json()
        | {"seconds": 12.3, "steps_per_epoch": 4, "optimizer_steps": 8, "placement": PLACEMENT},
        "software": SOFTWARE,
    }


TEACHERS = [None, Path("runs/unetpp/unetpp.keras")]


@pytest.mark.parametrize("teacher", TEACHERS)
def test_the_training_card_is_what_training_writes(teacher: Path | None) -> None:
    card = ModelCard.for_training(
        CONFIG, ["A", "B"], teacher, HISTORY, 0.75, 12.34, 4, 8, PLACEMENT, SOFTWARE,
        TRAINING_DATA, None if teacher is None else KERAS_TEACHER,
    )  # fmt: skip
    lambdas = CONFIG.distillation.lambdas
    losses = {"segmentation": "dice+ce"}
    if teacher is not None:
        losses |= {name: lambdas[name] for name in CONFIG.distillation.enabled}
    expected = expected_training_card(None if teacher is None else str(teacher), losses)
    assert dumped(card.to_json()) == dumped(expected)
    assert ModelCard.parse(dumped(expected), WHERE) == card
    assert card.training_data == tuple(TRAINING_DATA)
    assert not card.synthetic_only  # site B is real


def test_a_card_says_when_its_model_saw_synthetic_scans_only() -> None:
    synthetic = [{"site": s, "origin": "synthetic", "cases": 4, "labelled": 4} for s in "AB"]
    card = ModelCard.from_json(TRAINED | {"training_data": synthetic}, WHERE)
    assert card.synthetic_only
    assert card.training_data == (
        SiteData("A", "synthetic", 4, 4),
        SiteData("B", "synthetic", 4, 4),
    )
    mixed = [*synthetic, {"site": "dicom", "origin": "real", "cases": 2, "labelled": 0}]
    assert not ModelCard.from_json(TRAINED | {"training_data": mixed}, WHERE).synthetic_only


def test_cards_older_than_the_data_record_still_read() -> None:
    """Cards written before ``training_data`` and ``teacher_model`` existed: read, written
    back unchanged, and not called synthetic (they do not say)."""
    card = ModelCard.from_json(TRAINED | {"teacher": "runs/unetpp/unetpp.keras"}, WHERE)
    assert card.training_data is None
    assert card.teacher_model is None
    assert not card.synthetic_only
    assert "training_data" not in card.to_json()
    assert "teacher_model" not in card.to_json()
