"""Scans without masks teach a student through the distillation terms only: the slice
pipeline flags them, the Distiller takes Loss_Seg and Dice from labelled samples alone, a
model trained alone refuses them, and a distillation from a precomputed teacher reads the
teacher's maps from the batch."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from napari_kdseg.card import ModelCard
from napari_kdseg.cli import main
from napari_kdseg.core.errors import DatasetError
from napari_kdseg.core.events import captured
from napari_kdseg.data.augment import AugmentConfig
from napari_kdseg.data.cache import PreparedCase, PreprocessCache
from napari_kdseg.data.datasets import Dataset, discover
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.data.preprocess import PreprocessConfig, middle_extent
from napari_kdseg.data.provenance import SiteData
from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.models import build_model
from napari_kdseg.training.config import DistillationConfig, TrainConfig
from napari_kdseg.training.distiller import Distiller
from napari_kdseg.training.pipeline import SliceDataset, teacher_logits
from napari_kdseg.training.run import RunOptions, distill, load_split, train

SIZE = 32
TINY = TrainConfig(
    width=0.125,
    preprocess=PreprocessConfig(size=SIZE, context=3),
    epochs=1,
    batch_size=8,
    learning_rate=3e-3,
    cycle_step_size=20,
    augment=AugmentConfig(),
    validation_fraction=0.34,
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Site A labelled (3 cases), site B the same scanner's scans without their masks."""
    root = tmp_path_factory.mktemp("phantom") / "data"
    generate_phantom(root, cases_per_site=3, size=SIZE, seed=0, sites="AB")
    for mask in (root / "B").glob("*_segmentation.nii.gz"):
        mask.unlink()
    return root


@pytest.fixture(scope="module")
def dataset(phantom: Path) -> Dataset:
    return discover(phantom)


@pytest.fixture(scope="module")
def prepared(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> list[PreparedCase]:
    cache = PreprocessCache(tmp_path_factory.mktemp("cache"))
    return cache.prepare_all(dataset.cases(["A", "B"], labelled=False), TINY.preprocess)


# --- the slice pipeline ---------------------------------------------------------------------------


def test_unlabelled_cases_need_the_flag(prepared: list[PreparedCase]) -> None:
    with pytest.raises(ValueError, match=r"cases without masks .* \['B/Case00'.*unlabelled=True"):
        SliceDataset(prepared, 4, 3)


def test_unlabelled_samples_are_flagged_with_an_empty_mask(prepared: list[PreparedCase]) -> None:
    data = SliceDataset(prepared, 5, 3, unlabelled=True, shuffle=False, outside_share=0.25)
    # an unlabelled case's slices: the middle share of its scan plus the outside share
    unlabelled = [n for n, case in enumerate(prepared) if case.label is None]
    assert len(unlabelled) == 3
    for number in unlabelled:
        drawn = data.index[data.index[:, 0] == number, 1]
        first, last = middle_extent(prepared[number].image.shape[0])
        inside = np.arange(first, last + 1)
        assert set(inside) <= set(drawn.tolist())
        assert len(drawn) == len(inside) + round(0.25 * len(inside))
    seen = 0
    for batch in range(len(data)):
        x, y = data[batch]
        assert set(x) == {"image", "labelled"}
        assert x["image"].shape == (len(y), SIZE, SIZE, 3)
        assert x["labelled"].dtype == np.float32
        rows = data.index[batch * 5 : (batch + 1) * 5]
        expected = [prepared[n].label is not None for n, _ in rows]
        np.testing.assert_array_equal(x["labelled"], np.asarray(expected, np.float32))
        assert not y[x["labelled"] == 0].any()
        seen += int(y[x["labelled"] == 1].any())
    assert seen > 0


def test_labelled_cases_alone_batch_as_before(prepared: list[PreparedCase]) -> None:
    labelled = [case for case in prepared if case.label is not None]
    augment = AugmentConfig()
    before = SliceDataset(labelled, 4, 3, augment=augment, outside_share=0.25, seed=3)
    after = SliceDataset(
        labelled, 4, 3, augment=augment, outside_share=0.25, seed=3, unlabelled=True
    )
    assert len(before) == len(after)
    for batch in range(len(before)):
        (x0, y0), (x1, y1) = before[batch], after[batch]
        assert isinstance(x1, np.ndarray)
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)


def test_teacher_maps_travel_with_their_slices(prepared: list[PreparedCase]) -> None:
    labelled = [case for case in prepared if case.label is not None]
    maps = [np.asarray(case.label, np.float32) for case in labelled]  # a teacher that is right
    spatial = AugmentConfig(
        flip_left_right=0.5, flip_up_down=0.5, rotation_probability=1, scale_probability=1
    )
    data = SliceDataset(labelled, 8, 3, augment=spatial, teacher_maps=maps, seed=1)
    disagree = total = 0
    for batch in range(len(data)):
        x, y = data[batch]
        assert set(x) == {"image", "teacher_logits"}
        logits = x["teacher_logits"]
        assert logits.shape == (*y.shape, 2)
        probability = np.exp(logits)
        np.testing.assert_allclose(probability.sum(-1), 1.0, atol=1e-5)
        disagree += int(np.sum(np.argmax(logits, -1) != y))
        total += int(y.sum())
    # the same warp: only pixels on the gland's rim (interpolated map) may differ
    assert total > 0
    assert disagree <= 0.1 * total
    with pytest.raises(ValueError, match=r"A/Case\d\d: the teacher's map has shape"):
        SliceDataset(labelled, 8, 3, teacher_maps=[m[:, :16] for m in maps])


def test_teacher_labels_stand_in_for_missing_masks(prepared: list[PreparedCase]) -> None:
    """The hard-label baseline: a scan without a mask learns the teacher's mask (its map at
    0.5), drawn from the same slices as when it learns through the distillation terms."""
    rng = np.random.default_rng(0)
    maps = [rng.random(case.image.shape).astype(np.float32) for case in prepared]
    with pytest.raises(ValueError, match="teacher_labels needs teacher_maps"):
        SliceDataset(prepared, 4, 3, teacher_labels=True)
    data = SliceDataset(prepared, 4, 3, teacher_maps=maps, teacher_labels=True, shuffle=False)
    distilled = SliceDataset(prepared, 4, 3, teacher_maps=maps, unlabelled=True, shuffle=False)
    np.testing.assert_array_equal(data.index, distilled.index)
    unlabelled_seen = 0
    for batch in range(len(data)):
        x, y = data[batch]
        assert set(x) == {"image", "teacher_logits"}  # every sample counts as labelled
        for row, (number, index) in enumerate(data.index[batch * 4 : (batch + 1) * 4]):
            case = prepared[number]
            expected = maps[number][index] > 0.5 if case.label is None else case.label[index]
            np.testing.assert_array_equal(y[row], expected)
            unlabelled_seen += case.label is None
    assert unlabelled_seen > 0


def test_the_ground_truth_flag_is_carried_when_asked(prepared: list[PreparedCase]) -> None:
    """Which samples' scans have a mask of their own, whether or not the teacher's masks
    stand in (and so "labelled" says otherwise)."""
    rng = np.random.default_rng(0)
    maps = [rng.random(case.image.shape).astype(np.float32) for case in prepared]
    settings = {"teacher_maps": maps, "teacher_labels": True, "shuffle": False}
    flagged = SliceDataset(prepared, 4, 3, flag_ground_truth=True, **settings)
    plain = SliceDataset(prepared, 4, 3, **settings)
    seen = set()
    for batch in range(len(flagged)):
        (x, y), (x_plain, y_plain) = flagged[batch], plain[batch]
        assert set(x) == {"image", "teacher_logits", "has_ground_truth"}
        assert set(x_plain) == {"image", "teacher_logits"}
        rows = flagged.index[batch * 4 : (batch + 1) * 4]
        expected = np.asarray([prepared[n].label is not None for n, _ in rows], np.float32)
        np.testing.assert_array_equal(x["has_ground_truth"], expected)
        np.testing.assert_array_equal(x["image"], x_plain["image"])
        np.testing.assert_array_equal(y, y_plain)
        seen |= set(expected.tolist())
    assert seen == {0.0, 1.0}
    # beside "labelled", which says the same without teacher labels
    x, _ = SliceDataset(prepared, 24, 3, unlabelled=True, flag_ground_truth=True)[0]
    np.testing.assert_array_equal(x["has_ground_truth"], x["labelled"])
    # labelled cases alone: a dict, so that the Distiller reads the flag there too
    labelled = [case for case in prepared if case.label is not None]
    x, _ = SliceDataset(labelled, 4, 3, flag_ground_truth=True)[0]
    assert set(x) == {"image", "has_ground_truth"}
    np.testing.assert_array_equal(x["has_ground_truth"], np.ones(4, np.float32))


def test_teacher_logits_are_the_log_probabilities() -> None:
    probability = np.array([0.0, 0.25, 1.0], np.float32)
    logits = teacher_logits(probability)
    np.testing.assert_allclose(np.exp(logits).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(logits[1]), [0.75, 0.25], rtol=1e-6)
    assert np.isfinite(logits).all()
    assert logits[0, 1] == pytest.approx(np.log(1e-4), rel=1e-5)


# --- the Distiller --------------------------------------------------------------------------------

SHAPE = (SIZE, SIZE, 3)


def _distiller(config: DistillationConfig) -> Distiller:
    keras.utils.set_random_seed(0)
    teacher = build_model("unetpp", SHAPE, 2, 0.125)
    student = build_model("enet", SHAPE, 2, 0.125)
    return Distiller(teacher, student, config, SegmentationLoss())


def _results(distiller: Distiller) -> dict[str, float]:
    return {name: float(tracker.result()) for name, tracker in distiller.trackers.items()}


def test_segmentation_comes_from_labelled_samples_only() -> None:
    distiller = _distiller(DistillationConfig().only(["logits", "affinity"]))
    rng = np.random.default_rng(0)
    image = rng.standard_normal((4, *SHAPE)).astype(np.float32)
    y = (image[..., 1] > 0.3).astype(np.int32)

    # only unlabelled samples: Loss_Seg is exactly 0, the total is the weighted terms
    x = {"image": image, "labelled": np.zeros(4, np.float32)}
    total = ops.convert_to_numpy(distiller.compute_loss(x, y, distiller(x)))
    values = _results(distiller)
    assert values["segmentation"] == 0.0
    assert np.all(np.isfinite(total))
    weighted = 0.2 * values["logits"] + 0.9 * values["affinity"]
    assert values["logits"] > 0
    assert values["affinity"] > 0
    assert values["loss"] == pytest.approx(weighted, rel=1e-6)
    assert float(distiller.dice.total) == 0.0  # nothing counted towards Dice

    # a mixed batch: Loss_Seg and Dice of the labelled samples alone, terms of all four
    for tracker in distiller.metrics:
        tracker.reset_state()
    labelled = np.array([1, 0, 1, 0], np.float32)
    x = {"image": image, "labelled": labelled}
    distiller.compute_loss(x, y, distiller(x))
    values = _results(distiller)
    logits = distiller.student(image, training=False)
    alone = SegmentationLoss().batch_loss(y[::2], logits[::2])
    assert values["segmentation"] == pytest.approx(float(alone), rel=1e-5)
    everyone = SegmentationLoss().batch_loss(y, logits)
    assert values["segmentation"] != pytest.approx(float(everyone), rel=1e-3)

    plain = _distiller(DistillationConfig().only(["logits", "affinity"]))
    plain.compute_loss(image, y, plain(image))  # all labelled, as an image batch
    assert _results(plain)["logits"] == pytest.approx(values["logits"], rel=1e-5)


def test_the_terms_can_read_the_samples_without_ground_truth_alone() -> None:
    """distil_on="unlabelled": every term (KMM, from a Keras teacher, too) is the term of the
    samples without a ground-truth mask alone, 0 in a batch without any; Loss_Seg is as
    before."""
    distiller = _distiller(DistillationConfig(distil_on="unlabelled"))
    rng = np.random.default_rng(0)
    image = rng.standard_normal((4, *SHAPE)).astype(np.float32)
    image[::2] = 10 * image[::2] + 3  # the samples with a mask unlike the others
    y = (image[..., 1] > 0.3).astype(np.int32)

    def values(x: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
        for tracker in distiller.metrics:
            tracker.reset_state()
        distiller.compute_loss(x, y, distiller(x))
        return _results(distiller)

    ground_truth = np.array([1, 0, 1, 0], np.float32)
    mixed = values({"image": image, "has_ground_truth": ground_truth}, y)
    alone = values({"image": image[1::2], "has_ground_truth": np.zeros(2, np.float32)}, y[1::2])
    everyone = values({"image": image, "has_ground_truth": np.zeros(4, np.float32)}, y)
    for name in ("logits", "kernel_matrix", "affinity"):
        assert mixed[name] > 0
        assert mixed[name] == pytest.approx(alone[name], rel=1e-5), name
        assert mixed[name] != pytest.approx(everyone[name], rel=1e-3), name
    assert mixed["segmentation"] == pytest.approx(everyone["segmentation"], rel=1e-6)

    labelled = values({"image": image, "has_ground_truth": np.ones(4, np.float32)}, y)
    assert (labelled["logits"], labelled["kernel_matrix"], labelled["affinity"]) == (0, 0, 0)
    assert labelled["loss"] == pytest.approx(labelled["segmentation"], rel=1e-6)

    with pytest.raises(ValueError, match=r"does not carry; .* SliceDataset\(flag_ground_truth"):
        distiller.compute_loss(image, y, distiller(image))


def test_focal_loss_and_background_dice() -> None:
    keras.utils.set_random_seed(0)
    student = build_model("enet", SHAPE, 2, 0.125)
    teacher = build_model("unetpp", SHAPE, 2, 0.125)
    config = DistillationConfig().only(["logits"])
    image = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
    y = (image[..., 0] > 0).astype(np.int32)
    x = {"image": image, "labelled": np.array([0, 1], np.float32)}
    focal = Distiller(teacher, student, config, SegmentationLoss(kind="dice+focal"))
    focal.compute_loss(x, y, focal(x))
    alone = SegmentationLoss(kind="dice+focal").batch_loss(y[1:], student(image[1:]))
    assert float(focal.trackers["segmentation"].result()) == pytest.approx(float(alone), rel=1e-5)
    with_background = Distiller(teacher, student, config, SegmentationLoss(include_background=True))
    with pytest.raises(ValueError, match="include_background=False"):
        with_background.compute_loss(x, y, with_background(x))


# --- runs -----------------------------------------------------------------------------------------


def test_a_model_trained_alone_refuses_a_site_without_masks(
    dataset: Dataset, tmp_path: Path
) -> None:
    cache = PreprocessCache(tmp_path / "cache")
    message = r"site 'B' has no labelled cases to train on \(its 3 case\(s\) have no mask"
    with pytest.raises(DatasetError, match=message) as caught:
        load_split(dataset, ["A", "B"], TINY, cache)
    assert caught.value.path == str(dataset.site("B").path)
    with pytest.raises(DatasetError, match=message):
        train(dataset, ["A", "B"], TINY, tmp_path / "out", RunOptions(cache))
    # a distillation takes them, for training only
    kept, held = load_split(dataset, ["A", "B"], TINY, cache, unlabelled=True)
    assert [case.site for case in kept].count("B") == 3
    assert all(case.label is not None for case in held)
    assert len(held) == 1
    kept, held = load_split(dataset, ["B"], TINY, cache, unlabelled=True)
    assert (len(kept), held) == (3, [])


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained teacher is enough to exercise the plumbing."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "unetpp.keras"
    build_model("unetpp", SHAPE, 2, 0.125).save(path)
    return path


@pytest.mark.slow
def test_distillation_mixes_labelled_and_unlabelled_sites(
    dataset: Dataset, teacher_file: Path, tmp_path: Path
) -> None:
    options = RunOptions(PreprocessCache(tmp_path / "cache"))
    result = distill(dataset, ["A", "B"], TINY, teacher_file, tmp_path / "out", options)
    history = result.history
    for name in ("loss", "segmentation", "logits", "kernel_matrix", "affinity", "val_dice"):
        assert all(np.isfinite(history[name])), name
    assert result.model_path is not None
    assert result.model_path.exists()


@pytest.mark.slow
def test_distillation_from_precomputed_teacher_maps(
    dataset: Dataset,
    teacher_file: Path,
    tmp_path: Path,
    promise12_case: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(
        ValueError, match=r"KMM needs the teacher's features .* 'unetpp_precomputed' does not give"
    ):
        distill(dataset, ["A", "B"], TINY, teacher_file, tmp_path / "kmm", precompute=True)
    config = TrainConfig(
        **{**TINY.__dict__, "distillation": DistillationConfig().only(["logits", "affinity"])}
    )
    options = RunOptions(PreprocessCache(tmp_path / "cache"))
    for attempt in ("first", "second"):
        with captured() as events:
            result = distill(
                dataset, ["A", "B"], config, teacher_file, tmp_path / attempt, options,
                precompute=True,
            )  # fmt: skip
        ready = [e for e in events if e["event"] == "stage_done"]
        assert [e["stage"] for e in ready] == ["teacher maps"]
        # 5 training cases (2 of A, 3 of B) and 1 validation case; the second run reuses them
        expected = (6, 0) if attempt == "first" else (0, 6)
        assert (ready[0]["computed"], ready[0]["cached"]) == expected
        for name in ("segmentation", "logits", "affinity", "val_logits", "val_dice"):
            assert all(np.isfinite(result.history[name])), name
        assert "kernel_matrix" not in result.history
    # the card says what taught the student and on which scans
    card = ModelCard.read_beside(result.model_path)
    assert card.training_data == (
        SiteData("A", "synthetic", 3, 3),
        SiteData("B", "synthetic", 3, 0),
    )
    assert card.synthetic_only
    assert card.teacher_model is not None
    assert card.teacher_model["kind"] == "keras"
    assert card.teacher_model["architecture"] == "unetpp"
    assert card.teacher_model["precomputed"] is True
    assert len(card.teacher_model["file_blake2b"]) == 32
    # so kdseg segment warns when this phantom-trained student meets a real scan, not a phantom
    warning = "This model was trained only on synthetic scans; its output on a real scan is not"
    scans = {
        "real": (promise12_case[0], True),
        "phantom": (dataset.site("A").cases[0].image, False),
    }
    for name, (scan, warns) in scans.items():
        out = tmp_path / f"{name}-mask.nii.gz"
        assert main(["segment", str(result.model_path), str(scan), "--out", str(out)]) == 0
        assert (warning in capsys.readouterr().out) is warns, scan


@pytest.mark.slow
def test_scans_without_masks_alone_validate_against_the_teacher(
    dataset: Dataset, teacher_file: Path, tmp_path: Path
) -> None:
    """Site B alone (no masks): a third of its scans is held out and the validation Dice is
    agreement with the teacher's masks; with teacher labels, the segmentation loss alone
    trains, on the teacher's masks."""
    hard_labels = DistillationConfig(teacher_labels=True).only([])
    config = TrainConfig(**{**TINY.__dict__, "distillation": hard_labels})
    options = RunOptions(PreprocessCache(tmp_path / "cache"))
    with captured() as events:
        result = distill(
            dataset, ["B"], config, teacher_file, tmp_path / "out", options, precompute=True
        )
    progress = [e for e in events if e["event"] == "stage_progress"]
    assert [(e["done"], e["total"]) for e in progress] == [(1, 3), (2, 3), (3, 3)]
    assert all(np.isfinite(result.history["val_dice"]))
    assert not {"logits", "affinity"} & set(result.history)
    start = next(e for e in events if e["event"] == "start")
    assert start["steps_per_epoch"] >= 1
    card = ModelCard.read_beside(result.model_path)
    assert card.teacher_model is not None
    assert "segmentation loss only" in card.teacher_model["labels"]
    assert "held-out scans" in card.teacher_model["validation"]
    with pytest.raises(ValueError, match="needs its maps computed ahead of training"):
        distill(dataset, ["B"], config, teacher_file, tmp_path / "live", options)


@pytest.mark.slow
def test_distilling_on_the_scans_without_masks_alone_from_the_command_line(
    phantom: Path, teacher_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Site A's masks and site B's teacher masks train the segmentation loss; LM and AAM read
    site B alone, the teacher is asked about site B alone, and the card says so."""
    out = tmp_path / "out"
    args = ["distill", str(phantom), "--teacher", str(teacher_file), "--precompute-teacher"]
    args += ["--teacher-labels", "--losses", "logits", "affinity", "--distil-on", "unlabelled"]
    args += ["--size", str(SIZE), "--width", "0.125", "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    maps = [e for e in events if e["event"] == "stage_done" and e["stage"] == "teacher maps"]
    assert [(m["computed"], m["cached"]) for m in maps] == [(3, 0)]  # B's 3 scans, none of A's
    card = ModelCard.read_beside(out / "enet.keras")
    assert card.training["distillation"]["distil_on"] == "unlabelled"
    assert card.training["distillation"]["teacher_labels"] is True
    assert card.teacher_model is not None
    assert card.teacher_model["distillation_losses"] == (
        "applied only to the scans without a ground-truth mask; the scans with one learned "
        "from their own mask alone"
    )
    assert "beside the distillation losses" in card.teacher_model["labels"]
    assert card.metrics is not None
    final = card.metrics["final"]
    for name in ("loss", "segmentation", "logits", "affinity", "val_dice"):
        assert np.isfinite(final[name]), name
    assert final["logits"] > 0
    # validation holds site A's scans out, all with masks: the terms read none of them
    assert (final["val_logits"], final["val_affinity"]) == (0.0, 0.0)
