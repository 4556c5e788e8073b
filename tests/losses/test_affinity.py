"""Adaptive Affinity Module (paper eqs. 1-4, after AAF): values, invariants, adversarial weights."""

from __future__ import annotations

import keras
import loss_reference as reference
import numpy as np
import pytest
from keras import ops

from napari_kdseg.losses import AdaptiveAffinity, affinity_loss, affinity_terms
from napari_kdseg.losses.affinity import neighbour_offsets


def as_float(value: object) -> float:
    return float(ops.convert_to_numpy(value))


def blob_labels(batch: int, height: int, width: int, classes: int = 2) -> np.ndarray:
    """Rectangles of classes 1.. on background 0, different per sample: real boundaries."""
    labels = np.zeros((batch, height, width), np.int32)
    for b in range(batch):
        for c in range(1, classes):
            top, left = (b + c) % 3, (2 * b + c) % 3
            labels[b, top : top + height // 2, left : left + width // 2 + c] = c
    return labels


def confident_logits(labels: np.ndarray, classes: int, confidence: float) -> np.ndarray:
    return (confidence * (2 * np.eye(classes)[labels] - 1)).astype(np.float32)


def test_offsets_are_the_eight_neighbours() -> None:
    assert sorted(neighbour_offsets(2)) == sorted(
        [(-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 2), (2, -2), (2, 0), (2, 2)]
    )


@pytest.mark.parametrize(
    ("sizes", "margin", "classes", "shape"),
    [((1,), 3.0, 2, (2, 6, 6)), ((1, 2, 3), 3.0, 2, (2, 7, 6)), ((1, 3), 1.5, 3, (1, 6, 8))],
)
def test_matches_pairwise_numpy_reference(
    rng: np.random.Generator,
    sizes: tuple[int, ...],
    margin: float,
    classes: int,
    shape: tuple[int, int, int],
) -> None:
    logits = rng.normal(scale=3.0, size=(*shape, classes)).astype(np.float32)
    labels = blob_labels(*shape, classes)
    expected = reference.affinity_loss(logits, labels, sizes, margin)
    assert as_float(affinity_loss(logits, labels, sizes, margin)) == pytest.approx(
        expected, rel=1e-5
    )


def test_class_weights_match_numpy_reference(rng: np.random.Generator) -> None:
    logits = rng.normal(scale=3.0, size=(2, 7, 7, 3)).astype(np.float32)
    labels = blob_labels(2, 7, 7, 3)
    weights = rng.random((3, 3)).astype(np.float32)
    expected = reference.affinity_loss(logits, labels, class_weights=weights)
    assert as_float(affinity_loss(logits, labels, class_weights=weights)) == pytest.approx(
        expected, rel=1e-5
    )


def test_unweighted_loss_is_the_same_in_both_kl_directions(rng: np.random.Generator) -> None:
    # the neighbourhood is symmetric, so KL(F_i||F_j) (paper) and KL(F_j||F_i) (AAF's code)
    # sum to the same unweighted loss
    logits = rng.normal(scale=3.0, size=(2, 6, 6, 3)).astype(np.float32)
    labels = blob_labels(2, 6, 6, 3)
    paper = reference.affinity_loss(logits, labels)
    aaf = reference.affinity_loss(logits, labels, neighbour_first=True)
    assert paper == pytest.approx(aaf, rel=1e-9)


def test_labels_with_trailing_channel_axis(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    labels = blob_labels(2, 6, 6)
    assert as_float(affinity_loss(logits, labels[..., None])) == pytest.approx(
        as_float(affinity_loss(logits, labels)), rel=1e-7
    )


def test_one_teacher_class_has_no_negative_term(rng: np.random.Generator) -> None:
    logits = rng.normal(scale=3.0, size=(2, 6, 6, 2)).astype(np.float32)
    labels = np.ones((2, 6, 6), np.int32)
    positive, negative = affinity_terms(logits, labels)
    assert np.all(ops.convert_to_numpy(negative) == 0.0)
    assert np.all(ops.convert_to_numpy(positive)[:, 0] == 0.0)  # no centre of class 0
    assert np.all(ops.convert_to_numpy(positive)[:, 1] > 0.0)
    assert as_float(affinity_loss(logits, labels)) == pytest.approx(
        reference.affinity_loss(logits, labels), rel=1e-5
    )


def test_student_agreeing_with_teacher_confidently_costs_nothing() -> None:
    labels = blob_labels(2, 8, 8)
    positive, negative = affinity_terms(confident_logits(labels, 2, 20.0), labels)
    # P+: identical distributions; P-: KL across the boundary (about 9.2 after clipping)
    # is beyond the margin of 3
    assert np.max(np.abs(ops.convert_to_numpy(positive))) < 1e-6
    assert np.all(ops.convert_to_numpy(negative) == 0.0)


def test_uncertain_student_pays_the_margin_at_boundaries() -> None:
    labels = blob_labels(2, 8, 8)
    _, negative = affinity_terms(np.zeros((2, 8, 8, 2), np.float32), labels)
    # uniform predictions: W = 0 for every pair, each P- pair costs the margin
    assert as_float(ops.sum(negative, axis=1)[0]) == pytest.approx(3.0, rel=1e-6)


def test_pairs_outside_the_image_are_excluded(rng: np.random.Generator) -> None:
    logits = rng.normal(scale=3.0, size=(1, 2, 2, 2)).astype(np.float32)
    labels = np.array([[[0, 1], [1, 0]]], np.int32)
    # no pixel of a 2x2 image has a neighbour at distance 2 or 3: those sizes contribute 0
    positive, negative = affinity_terms(logits, labels, sizes=(2, 3))
    assert np.all(ops.convert_to_numpy(positive) == 0.0)
    assert np.all(ops.convert_to_numpy(negative) == 0.0)
    assert as_float(affinity_loss(logits, labels, sizes=(1, 2, 3))) == pytest.approx(
        reference.affinity_loss(logits, labels, (1, 2, 3)), rel=1e-5
    )


def test_finite_on_extreme_logits_and_empty_sets(gradients) -> None:
    labels = blob_labels(2, 6, 6)
    extreme = confident_logits(labels, 2, 1e4)
    extreme[0] *= -1  # sample 0 contradicts the teacher everywhere
    value, (grad,) = gradients(lambda x: affinity_loss(x, labels), extreme)
    assert np.isfinite(as_float(value))
    assert np.all(np.isfinite(ops.convert_to_numpy(grad)))
    for empty_labels in (np.zeros_like(labels), np.ones_like(labels)):
        value = affinity_loss(extreme, empty_labels)
        assert np.isfinite(as_float(value))


def test_gradient_is_finite_and_reaches_the_student(rng: np.random.Generator, gradients) -> None:
    logits = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    _, (grad,) = gradients(lambda x: affinity_loss(x, blob_labels(2, 6, 6)), logits)
    grad = ops.convert_to_numpy(grad)
    assert np.all(np.isfinite(grad))
    assert np.mean(np.abs(grad) > 0) > 0.9


def test_gradient_matches_finite_differences(rng: np.random.Generator, gradients) -> None:
    # float64, logits small enough that no probability is clipped and no hinge sits at a kink
    logits = rng.normal(scale=0.5, size=(1, 5, 5, 3))
    labels = blob_labels(1, 5, 5, 3)

    def loss(x):
        return affinity_loss(x, labels, sizes=(1, 2))

    _, (grad,) = gradients(loss, logits)
    grad = ops.convert_to_numpy(grad)
    for numeric, analytic in reference.directional_derivatives(loss, logits, grad, rng):
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)


def test_rejects_bad_arguments() -> None:
    logits = np.zeros((1, 4, 4, 2), np.float32)
    labels = np.zeros((1, 4, 4), np.int32)
    with pytest.raises(ValueError, match="sizes"):
        affinity_loss(logits, labels, sizes=(0, 1))
    with pytest.raises(ValueError, match="grid"):
        affinity_loss(logits, np.zeros((1, 3, 4), np.int32))
    with pytest.raises(ValueError, match="class_weights"):
        affinity_loss(logits, labels, class_weights=np.ones((2, 2)))


def test_layer_starts_uniform_and_equals_the_function(rng: np.random.Generator) -> None:
    layer = AdaptiveAffinity(num_classes=3, sizes=(1, 2), margin=2.0)
    assert [tuple(w.shape) for w in layer.trainable_weights] == [(2, 3)]
    np.testing.assert_allclose(ops.convert_to_numpy(layer.size_weights), 0.5)
    logits = rng.normal(scale=3.0, size=(2, 6, 6, 3)).astype(np.float32)
    labels = blob_labels(2, 6, 6, 3)
    expected = as_float(affinity_loss(logits, labels, (1, 2), 2.0))
    assert as_float(layer(logits, labels)) == pytest.approx(expected, rel=1e-6)
    layer.size_logits.assign(rng.normal(size=(2, 3)).astype(np.float32))
    weights = ops.convert_to_numpy(layer.size_weights)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, rtol=1e-6)
    expected = reference.affinity_loss(logits, labels, (1, 2), 2.0, class_weights=weights)
    assert as_float(layer(logits, labels)) == pytest.approx(expected, rel=1e-5)


def test_layer_reverses_the_gradient_of_its_weights(rng: np.random.Generator, gradients) -> None:
    logits = rng.normal(scale=2.0, size=(2, 6, 6, 2)).astype(np.float32)
    labels = blob_labels(2, 6, 6)
    layer = AdaptiveAffinity(num_classes=2)
    size_logits = rng.normal(size=(3, 2)).astype(np.float32)
    layer.size_logits.assign(size_logits)
    _, (plain,) = gradients(
        lambda z: affinity_loss(logits, labels, class_weights=ops.softmax(z, axis=0)),
        size_logits,
    )
    _, (reversed_,) = gradients(lambda: layer(logits, labels), layer.size_logits)
    np.testing.assert_allclose(ops.convert_to_numpy(reversed_), -ops.convert_to_numpy(plain))


def test_one_minimising_step_is_ascent_for_weights_and_descent_for_student(
    rng: np.random.Generator, gradients
) -> None:
    labels = blob_labels(2, 8, 8)
    start = rng.normal(scale=2.0, size=(2, 8, 8, 2)).astype(np.float32)
    student = keras.Variable(start)
    layer = AdaptiveAffinity(num_classes=2)
    before = ops.convert_to_numpy(layer.size_weights)
    loss, grads = gradients(lambda: layer(student, labels), layer.size_logits, student)
    keras.optimizers.SGD(learning_rate=1.0).apply_gradients(
        zip(grads, [layer.size_logits, student], strict=True)
    )
    after = ops.convert_to_numpy(layer.size_weights)
    assert not np.allclose(after, before)
    # the new weights make the same student look worse (ascent) ...
    assert as_float(affinity_loss(start, labels, class_weights=after)) > as_float(loss)
    # ... while the student's own step lowered the loss under the old weights (descent)
    assert as_float(affinity_loss(student, labels, class_weights=before)) < as_float(loss)


def test_layer_round_trips() -> None:
    layer = AdaptiveAffinity(num_classes=2, sizes=(1, 3), margin=2.5, name="aam")
    config = layer.get_config()
    assert (config["num_classes"], config["sizes"], config["margin"]) == (2, [1, 3], 2.5)
    restored = AdaptiveAffinity.from_config(config)
    assert (restored.num_classes, restored.sizes, restored.margin) == (2, (1, 3), 2.5)
    assert tuple(restored.size_logits.shape) == (2, 2)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(revived, AdaptiveAffinity)
    assert revived.get_config() == config
