"""Segmentation loss of eq. 8: soft Dice, focal and cross-entropy, and their Keras wrapper."""

from __future__ import annotations

import functools

import keras
import loss_reference as reference
import numpy as np
import pytest
from keras import ops

from napari_kdseg.losses import SegmentationLoss, cross_entropy, dice_loss, focal_loss


def as_float(value: object) -> float:
    return float(ops.convert_to_numpy(value))


def disc_labels(batch: int = 2, size: int = 8) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    disc = ((y - size / 2) ** 2 + (x - size / 2) ** 2 < (size / 3) ** 2).astype(np.int32)
    return np.stack([disc] * batch)


def perfect_logits(labels: np.ndarray, classes: int, confidence: float = 30.0) -> np.ndarray:
    return (confidence * (2 * np.eye(classes)[labels] - 1)).astype(np.float32)


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("classes", [2, 3])
def test_dice_matches_numpy_reference(
    rng: np.random.Generator, include_background: bool, classes: int
) -> None:
    labels = rng.integers(0, classes, size=(2, 6, 6))
    logits = rng.normal(scale=2.0, size=(2, 6, 6, classes)).astype(np.float32)
    expected = reference.dice_loss(labels, logits, include_background=include_background)
    assert as_float(dice_loss(labels, logits, include_background=include_background)) == (
        pytest.approx(expected, rel=1e-5)
    )


def test_dice_of_perfect_prediction_is_zero() -> None:
    labels = disc_labels()
    assert as_float(dice_loss(labels, perfect_logits(labels, 2))) == pytest.approx(0.0, abs=1e-6)
    assert as_float(dice_loss(labels, perfect_logits(1 - labels, 2))) == pytest.approx(1.0)


def test_dice_of_empty_mask_predicted_empty_is_zero(gradients) -> None:
    labels = np.zeros((2, 8, 8), np.int32)
    value, (grad,) = gradients(lambda x: dice_loss(labels, x), perfect_logits(labels, 2))
    assert as_float(value) == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(ops.convert_to_numpy(grad)))


@pytest.mark.parametrize(
    ("gamma", "alpha"), [(2.0, None), (0.5, None), (2.0, [0.25, 0.75]), (1.0, [0.2, 0.3, 0.5])]
)
def test_focal_matches_numpy_reference(
    rng: np.random.Generator, gamma: float, alpha: list[float] | None
) -> None:
    classes = 3 if alpha is not None and len(alpha) == 3 else 2
    labels = rng.integers(0, classes, size=(2, 5, 5))
    logits = rng.normal(scale=2.0, size=(2, 5, 5, classes)).astype(np.float32)
    expected = reference.focal_loss(labels, logits, gamma, alpha)
    assert as_float(focal_loss(labels, logits, gamma, alpha)) == pytest.approx(expected, rel=1e-5)


def test_focal_scalar_alpha_weights_foreground(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 3, size=(2, 5, 5))
    logits = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    assert as_float(focal_loss(labels, logits, alpha=0.25)) == pytest.approx(
        reference.focal_loss(labels, logits, alpha=[0.75, 0.25, 0.25]), rel=1e-5
    )


def test_focal_without_focusing_is_cross_entropy(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 2, size=(2, 5, 5))
    logits = rng.normal(scale=2.0, size=(2, 5, 5, 2)).astype(np.float32)
    expected = reference.cross_entropy(labels, logits)
    assert as_float(cross_entropy(labels, logits)) == pytest.approx(expected, rel=1e-5)
    assert as_float(focal_loss(labels, logits, gamma=0.0)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "loss", [dice_loss, focal_loss, functools.partial(focal_loss, gamma=0.5), cross_entropy]
)
def test_finite_on_extreme_logits_and_empty_masks(loss, gradients) -> None:
    for labels in (disc_labels(), np.zeros((2, 8, 8), np.int32)):
        for logits in (perfect_logits(labels, 2, 1e4), perfect_logits(1 - labels, 2, 1e4)):
            value, (grad,) = gradients(lambda x, labels=labels: loss(labels, x), logits)
            assert np.isfinite(as_float(value))
            assert np.all(np.isfinite(ops.convert_to_numpy(grad)))


@pytest.mark.parametrize("loss", [dice_loss, focal_loss, cross_entropy])
def test_gradient_reaches_the_logits(loss, rng: np.random.Generator, gradients) -> None:
    logits = rng.normal(size=(2, 8, 8, 2)).astype(np.float32)
    _, (grad,) = gradients(lambda x: loss(disc_labels(), x), logits)
    assert np.all(np.isfinite(ops.convert_to_numpy(grad)))
    assert np.mean(np.abs(ops.convert_to_numpy(grad)) > 0) > 0.9


def test_labels_with_trailing_channel_axis(rng: np.random.Generator) -> None:
    labels = disc_labels()
    logits = rng.normal(size=(2, 8, 8, 2)).astype(np.float32)
    for loss in (dice_loss, focal_loss, cross_entropy):
        assert as_float(loss(labels[..., None], logits)) == pytest.approx(
            as_float(loss(labels, logits)), rel=1e-7
        )


def test_rejects_bad_arguments() -> None:
    logits = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="grid"):
        dice_loss(np.zeros((1, 4, 5), np.int32), logits)
    with pytest.raises(ValueError, match="labels"):
        cross_entropy(np.zeros((1, 4, 4, 2), np.int32), logits)
    with pytest.raises(ValueError, match="two classes"):
        dice_loss(np.zeros((1, 4, 4), np.int32), logits[..., :1])
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(np.zeros((1, 4, 4), np.int32), logits, alpha=[0.1, 0.2, 0.7])
    with pytest.raises(ValueError, match="kind"):
        SegmentationLoss(kind="dice+bce")


@pytest.mark.parametrize("kind", ["dice+ce", "dice+focal"])
def test_segmentation_loss_sums_its_parts(rng: np.random.Generator, kind: str) -> None:
    labels = disc_labels()
    logits = rng.normal(size=(2, 8, 8, 2)).astype(np.float32)
    loss = SegmentationLoss(kind=kind, gamma=1.5, alpha=[0.4, 0.6])
    second = (
        reference.focal_loss(labels, logits, 1.5, [0.4, 0.6])
        if kind == "dice+focal"
        else reference.cross_entropy(labels, logits)
    )
    expected = reference.dice_loss(labels, logits) + second
    # y_true as Keras gives it: floats, with a channel axis
    y_true = labels[..., None].astype(np.float32)
    assert as_float(loss(y_true, logits)) == pytest.approx(expected, rel=1e-5)


def test_segmentation_loss_round_trips() -> None:
    loss = SegmentationLoss(kind="dice+focal", gamma=3.0, alpha=(0.3, 0.7), name="seg")
    config = loss.get_config()
    assert (config["kind"], config["gamma"], config["alpha"]) == ("dice+focal", 3.0, [0.3, 0.7])
    restored = SegmentationLoss.from_config(config)
    assert restored.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(revived, SegmentationLoss)
    assert revived.get_config() == config
