"""The model library lists exported ONNX students by their cards; no ONNX Runtime, no TF."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from napari_kdseg.card import CARD_METADATA_KEY
from napari_kdseg.library import LIBRARY_ENV, library_dir, list_models

CARD = {
    "format": "napari-kdseg model card 1",
    "architecture": "enet",
    "preprocess": {"size": 16, "context": 3, "orientation": "LPS"},
    "class_names": ["background", "prostate"],
    "training_sites": ["A", "B", "C"],
    "metrics": {"best_val_dice": 0.8125},
}


def identity_onnx(path: Path, card: dict | None) -> Path:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 16, 16, 3])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 16, 16, 3])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])], "identity", [image], [logits]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if card is not None:
        helper.set_model_props(model, {CARD_METADATA_KEY: json.dumps(card)})
    onnx.save(model, path)
    return path


def test_library_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "models"))
    assert library_dir() == tmp_path / "models"
    assert (tmp_path / "models").is_dir(), "created on demand"
    monkeypatch.delenv(LIBRARY_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert library_dir(create=False) == tmp_path / "home/.local/share/napari-kdseg/models"


def test_models_are_listed_with_their_cards_and_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path))
    identity_onnx(tmp_path / "b_student.onnx", CARD)
    identity_onnx(tmp_path / "c_no_card.onnx", None)
    identity_onnx(tmp_path / "d_bad_card.onnx", {"format": "something else"})
    (tmp_path / "a_broken.onnx").write_bytes(b"\x00\x01 not protobuf at all \xff" * 10)
    (tmp_path / "notes.txt").write_text("not a model")

    models = list_models()

    assert [m.name for m in models] == [
        "a_broken.onnx",
        "b_student.onnx",
        "c_no_card.onnx",
        "d_bad_card.onnx",
    ]
    broken, student, no_card, bad_card = models
    assert student.usable
    assert student.architecture == "enet"
    assert student.training_sites == ("A", "B", "C")
    assert (student.size, student.context) == (16, 3)
    assert student.validation_dice == pytest.approx(0.8125)
    assert student.file_bytes == (tmp_path / "b_student.onnx").stat().st_size
    assert student.summary() == ("enet trained on A, B, C; input 16x16x3; validation Dice 0.812")
    assert not broken.usable
    assert "not a readable ONNX file" in (broken.problem or "")
    assert "without a napari-kdseg model card" in (no_card.problem or "")
    assert "not a napari-kdseg model card" in (bad_card.problem or "")
    assert "unusable" in bad_card.summary()


def test_missing_folder_lists_nothing(tmp_path: Path) -> None:
    assert list_models(tmp_path / "nowhere") == []
