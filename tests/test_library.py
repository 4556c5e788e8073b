"""The model library lists exported ONNX students by their cards; no ONNX Runtime, no TF."""

from __future__ import annotations

import json
import re
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
    assert student.title() == "ENet — sites A–C"
    assert student.summary() == (
        "A light model trained on sites A–C. On held-out scans from those sites it agreed with "
        "the reference outlines at Dice 0.81 (1 is perfect). It reads slices resized to "
        "16 × 16 pixels."
    )
    assert student.details().splitlines() == [
        str(tmp_path / "b_student.onnx"),
        "architecture enet",
        "training sites: A, B, C",
        "input 16x16x3 (size x size x neighbouring slices)",
        "best validation Dice 0.812",
    ]
    assert not broken.usable
    assert "not a readable ONNX file" in (broken.problem or "")
    assert "without a napari-kdseg model card" in (no_card.problem or "")
    assert "not a napari-kdseg model card" in (bad_card.problem or "")
    assert "unusable" in bad_card.summary()
    assert bad_card.title() == "d_bad_card.onnx"
    assert "not a napari-kdseg model card" in bad_card.details()


#: A student distilled from a Keras UNet++ on synthetic sites, as training writes its card.
DISTILLED_CARD = CARD | {
    "architecture": "enet",
    "width": 0.5,
    "training_sites": ["A", "B", "C", "D", "E"],
    "training_data": [
        {"site": site, "origin": "synthetic", "cases": 4, "labelled": 4} for site in "ABCDE"
    ],
    "teacher": "/runs/F/unetpp/unetpp.keras",
    "teacher_model": {
        "kind": "keras",
        "description": "unetpp (Keras)",
        "architecture": "unetpp",
        "file": "/runs/F/unetpp/unetpp.keras",
    },
    "losses": {"segmentation": "dice+ce", "logits": 1.0, "kernel_matrix": 0.9, "affinity": 0.1},
    "metrics": {"best_val_dice": 0.7045},
}


def test_a_model_is_told_in_words_and_its_technical_details_kept_for_a_tooltip(
    tmp_path: Path,
) -> None:
    path = identity_onnx(tmp_path / "enet-from-unetpp-AAM-KMM-LM-unseen-F.onnx", DISTILLED_CARD)
    (model,) = list_models(tmp_path)

    assert model.title() == "ENet distilled from UNet++ — sites A–E"
    assert model.summary() == (
        "A light model trained on sites A–E (synthetic scans only). On held-out scans from "
        "those sites it agreed with the reference outlines at Dice 0.70 (1 is perfect). It "
        "reads slices resized to 16 × 16 pixels."
    )
    jargon = re.compile(r"\b(enet|unetpp|LM|KMM|AAM|onnx)\b|\d+x\d+x\d+")
    assert not jargon.search(model.title() + model.summary())
    assert model.details().splitlines() == [
        str(path),
        "architecture enet, width 0.5",
        "teacher: unetpp (Keras)",
        "losses: segmentation dice+ce, LM 1.0, KMM 0.9, AAM 0.1",
        "synthetic training sites A, B, C, D, E: 20 scans, 20 with masks",
        "input 16x16x3 (size x size x neighbouring slices)",
        "best validation Dice 0.705",
    ]


def test_a_student_of_taps_on_real_scans_without_masks_says_whose_outlines_it_matched(
    tmp_path: Path,
) -> None:
    """Validated against the teacher's masks (no scan had one), on synthetic and real sites
    that are not a run of letters."""
    card = DISTILLED_CARD | {
        "training_sites": ["A", "B", "prostate3t"],
        "training_data": [
            {"site": "A", "origin": "synthetic", "cases": 2, "labelled": 2},
            {"site": "B", "origin": "synthetic", "cases": 2, "labelled": 2},
            {"site": "prostate3t", "origin": "real", "cases": 3, "labelled": 0},
        ],
        "teacher": "taps",
        "teacher_model": {
            "kind": "taps",
            "description": "TAPS (lavlab-taps 1.1.2, ONNX)",
            "validation": "agreement (Dice) with the teacher's masks of held-out scans",
            "distillation_losses": "applied only to the scans without a ground-truth mask",
        },
    }
    identity_onnx(tmp_path / "enet-from-taps.onnx", card)
    (model,) = list_models(tmp_path)

    assert model.title() == "ENet distilled from TAPS — sites A, B and prostate3t"
    assert model.summary().startswith("A light model trained on sites A, B and prostate3t. ")
    assert "agreed with the teacher's outlines at Dice 0.70" in model.summary()
    assert "teacher: TAPS (lavlab-taps 1.1.2, ONNX)" in model.details().splitlines()
    assert "real training sites prostate3t: 3 scans, 0 with masks" in model.details()
    assert (
        "teacher's losses: applied only to the scans without a ground-truth mask"
        in model.details().splitlines()
    )


def test_missing_folder_lists_nothing(tmp_path: Path) -> None:
    assert list_models(tmp_path / "nowhere") == []
