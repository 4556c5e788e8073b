"""The quality report: plausibility reasons on synthetic masks, the verdict on a phantom case
and on a real scan, the card section, and ``kdseg segment``'s verdict and sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_kdseg.card import ModelCard
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.nifti import write_nifti
from napari_kdseg.data.phantom import make_case
from napari_kdseg.data.preprocess import PreprocessConfig, prepare_labels, prepare_volume
from napari_kdseg.data.volume import Volume
from napari_kdseg.inference.model import SegmentationModel
from napari_kdseg.inference.postprocess import largest_connected_component
from napari_kdseg.inference.quality import (
    CHECK,
    FEATURE_WORDS,
    OK,
    UNRELIABLE,
    Calibration,
    assess,
    default_calibration,
    summarise_scan,
    training_statistics,
)
from napari_kdseg.inference.segment import segment

CONFIG = PreprocessConfig(size=64, context=3)
#: A calibration for the synthetic masks: the risk is 0, so only plausibility speaks.
NEUTRAL = Calibration(weights={}, bias=-20.0, ok_below=0.5, unreliable_from=0.9)


def _scan(shape: tuple[int, int, int] = (20, 64, 64), spacing: float = 1.0) -> Volume:
    """A noise scan with 1 mm pixels and 3 mm slices (array order slice, row, column)."""
    affine = np.diag([spacing, spacing, 3.0, 1.0])
    array = np.random.default_rng(0).normal(100, 20, shape).astype(np.float32)
    return Volume(array, affine)


def _report(mask: np.ndarray, scan: Volume, calibration: Calibration = NEUTRAL):
    """The report of ``mask`` predicted with certainty (probabilities 0 or 1)."""
    image, geometry = prepare_volume(scan, CONFIG)
    model_mask = prepare_labels(Volume(mask.astype(np.uint8), scan.affine), CONFIG)
    probabilities = np.stack([1.0 - model_mask, model_mask], axis=-1).astype(np.float32)
    return assess(
        mask, probabilities, geometry, summarise_scan(image, geometry), None,
        calibration=calibration,
    )  # fmt: skip


def _ellipsoid(shape: tuple[int, int, int], centre, radii) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    (cz, cy, cx), (rz, ry, rx) = centre, radii
    return (((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2) <= 1


def test_a_plausible_gland_gives_no_reason() -> None:
    scan = _scan()
    mask = _ellipsoid(scan.shape, (10, 32, 32), (5, 18, 22))  # 30 x 36 x 44 mm, about 25 cc
    report = _report(mask, scan)
    assert report.verdict == OK, report.reasons
    assert 15 < report.mask.volume_cc < 80
    assert report.to_json()["training_data"] == "unknown"


def test_a_tiny_gland_is_unreliable() -> None:
    scan = _scan()
    mask = _ellipsoid(scan.shape, (10, 32, 32), (1, 4, 4))
    report = _report(mask, scan)
    assert report.verdict == UNRELIABLE
    assert any("far smaller than a prostate" in reason for reason in report.reasons)


def test_two_components_gap_slices_and_edge_contact_are_named() -> None:
    scan = _scan()
    gland = _ellipsoid(scan.shape, (10, 32, 32), (6, 18, 22))
    gapped = gland.copy()
    gapped[9:11] = False  # two slices missing inside the gland
    report = _report(gapped, scan)
    assert report.verdict == CHECK
    assert any("skips 2 slice(s)" in reason for reason in report.reasons)
    assert any("2 separate regions" in reason for reason in report.reasons)

    edge = _ellipsoid(scan.shape, (10, 32, 52), (6, 18, 22))  # runs off the right edge
    reasons = _report(edge, scan).reasons
    assert any("touches the edge of the image" in reason for reason in reasons)
    assert not any("skips" in reason for reason in reasons)


def _frayed_ball(shape: tuple[int, int, int]) -> np.ndarray:
    """A ball whose surface is eaten away at random: the frayed outline of a poor model."""
    ball = _ellipsoid(shape, (15, 32, 32), (6, 18, 18))
    shell = _ellipsoid(shape, (15, 32, 32), (7, 21, 21))
    noise = np.random.default_rng(0).random(shape) < 0.5
    return largest_connected_component(ball ^ (shell & noise)) > 0


def test_shape_measurements_of_a_ball_a_cut_off_gland_and_a_frayed_one() -> None:
    scan = _scan((30, 64, 64))  # 1 mm pixels, 3 mm slices: an 18 mm ball is 6 slices high
    ball = _report(_ellipsoid(scan.shape, (15, 32, 32), (6, 18, 18)), scan).mask
    cut = _report(_ellipsoid(scan.shape, (2, 32, 32), (6, 18, 18)), scan).mask
    frayed = _report(_frayed_ball(scan.shape), scan).mask
    assert 0.8 < ball.sphericity <= 1.0
    assert ball.end_slice_fraction == 0.0
    assert cut.end_slice_fraction > 0.1  # its widest slices lie on the scan's first slice
    assert cut.area_roughness > ball.area_roughness + 0.05
    assert frayed.sphericity < 0.5 * ball.sphericity


def test_the_risk_reason_names_what_raised_the_risk() -> None:
    scan = _scan((30, 64, 64))
    roundness = Calibration(
        weights={"sphericity": -20.0}, bias=10.0, ok_below=0.2, unreliable_from=0.8,
        typical={"sphericity": 0.7},
    )  # fmt: skip
    assert Calibration.from_json(roundness.to_json()) == roundness
    ball = _report(_ellipsoid(scan.shape, (15, 32, 32), (6, 18, 18)), scan, roundness)
    assert ball.verdict == OK, ball.reasons
    frayed = _report(_frayed_ball(scan.shape), scan, roundness)
    assert frayed.verdict == UNRELIABLE
    assert any(
        reason.startswith("the outline is likely poor") and "its 3D shape is irregular" in reason
        for reason in frayed.reasons
    ), frayed.reasons


def test_the_shipped_calibration_weighs_measurements_the_report_can_explain() -> None:
    calibration = default_calibration()
    assert calibration.weights
    assert set(calibration.weights) <= set(FEATURE_WORDS)
    assert set(calibration.typical) == set(calibration.weights)
    assert 0 < calibration.ok_below <= calibration.unreliable_from < 1


def test_an_empty_mask_is_unreliable() -> None:
    scan = _scan()
    report = _report(np.zeros(scan.shape, dtype=bool), scan)
    assert report.verdict == UNRELIABLE
    assert report.reasons == ("no prostate was found in this scan",)


def _phantom_statistics(sites: str = "ABDF") -> dict:
    summaries = []
    for site in sites:
        for index in range(2):
            image, label = make_case(site, index, size=64, seed=0)
            prepared, geometry = prepare_volume(image, CONFIG)
            summaries.append(summarise_scan(prepared, geometry, prepare_labels(label, CONFIG)))
    statistics = training_statistics(summaries)
    assert statistics is not None
    return statistics


def _truth_model(truth: Volume, card: dict) -> SegmentationModel:
    """A stand-in for a student that segments this case well: confident, slightly soft
    probabilities from the case's own mask."""
    from scipy import ndimage

    target = prepare_labels(truth, CONFIG).astype(np.float32)
    soft = ndimage.gaussian_filter(target, sigma=(0, 0.7, 0.7))
    state = {"slice": 0}

    def predict(batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        p = np.clip(soft[state["slice"] : state["slice"] + n], 1e-4, 1 - 1e-4)
        state["slice"] += n
        return np.log(np.stack([1 - p, p], axis=-1)).astype(np.float32)

    return SegmentationModel(Path("truth.onnx"), card, predict, runtime="test")


def _card(statistics: dict | None) -> dict:
    card = ModelCard(preprocess=CONFIG, class_names=("background", "prostate")).to_json()
    return card | ({"training_statistics": statistics} if statistics else {})


def test_a_well_segmented_phantom_case_of_a_training_site_is_ok() -> None:
    statistics = _phantom_statistics()
    scan, truth = make_case("B", 3, size=64, seed=0)  # a training site, an unseen case
    result = segment(scan, _truth_model(truth, _card(statistics)), batch_size=64)
    assert result.quality is not None
    assert result.quality.verdict == OK, result.quality.reasons
    assert result.quality.scan.known
    assert not result.quality.scan.unlike_training
    assert result.quality.risk < default_calibration().ok_below


def test_the_card_section_round_trips_and_old_cards_say_unknown() -> None:
    statistics = _phantom_statistics("AB")
    card = ModelCard.from_json(_card(statistics), "card.json")
    assert card.training_statistics == statistics
    assert ModelCard.from_json(card.to_json(), "card.json") == card
    assert ModelCard.from_json(_card(None), "old.json").training_statistics is None


def test_a_phantom_trained_card_on_the_real_scan_is_not_ok(
    promise12_case: tuple[Path, Path],
) -> None:
    """The real scan against a card whose training scans are the phantom's: even a model
    that outlined the gland perfectly is flagged, as the scan is unlike its training scans."""
    scan = read_volume(promise12_case[0])
    truth = read_volume(promise12_case[1], labels=True)
    result = segment(scan, _truth_model(truth, _card(_phantom_statistics())), batch_size=128)
    assert result.quality is not None
    assert result.quality.verdict in (CHECK, UNRELIABLE)
    assert result.quality.scan.unlike_training
    assert any("training scan" in reason for reason in result.quality.reasons)


def test_segment_prints_the_verdict_and_writes_it_beside_the_mask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_onnx_runtime import threshold_onnx  # pytest puts this folder on sys.path

    from napari_kdseg.cli import main

    image, _ = make_case("C", 0, size=64, seed=0)
    scan = write_nifti(image, tmp_path / "Case00.nii.gz")
    model = threshold_onnx(tmp_path / "threshold.onnx")
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(model), str(scan), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "quality: " in text
    sidecar = json.loads((tmp_path / "mask.json").read_text())
    verdict = sidecar["quality"]["verdict"]
    assert f"quality: {verdict.upper()}" in text
    assert sidecar["quality"]["training_data"] == "unknown"  # the threshold card is old
    # the sidecar is never replaced silently either, even when the mask is gone
    out.unlink()
    assert main(["segment", str(model), str(scan), "--out", str(out)]) == 2
    assert "mask.json already exists" in capsys.readouterr().err
    assert main(["segment", str(model), str(scan), "--out", str(out), "--overwrite", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quality"]["verdict"] == verdict
    assert report["quality"]["reasons"] == sidecar["quality"]["reasons"]
    assert "quality" in report["seconds"]
