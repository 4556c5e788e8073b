"""The Distiller adds up whichever registered terms are on, and asks a teacher only what the
Teacher interface promises: logits, and features at the taps it has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest
from keras import ops

from napari_kdseg.distillation import terms
from napari_kdseg.distillation.base import DistillationTerm
from napari_kdseg.distillation.teacher import KerasTeacher, Teacher, batch_image
from napari_kdseg.distillation.terms import TermSpec
from napari_kdseg.losses import SegmentationLoss, logits_kl
from napari_kdseg.models import build_model
from napari_kdseg.training.config import DistillationConfig
from napari_kdseg.training.distiller import DistillationRamp, Distiller

SHAPE = (32, 32, 3)


class ProbabilityGap(DistillationTerm):
    """A toy term: mean squared difference of the student's and teacher's probabilities."""

    def call(self, student: dict[str, Any], teacher: dict[str, Any]) -> Any:
        gap = ops.softmax(student["logits"]) - ops.softmax(teacher["logits"])
        return ops.mean(ops.square(gap))


class LogitsOnlyTeacher(Teacher):
    """A teacher without feature taps (as an ONNX file would be): any Keras model."""

    def __init__(self, network: keras.Model) -> None:
        super().__init__(name="logits_only")
        self.network = network
        self.num_classes = int(network.output.shape[-1])
        self.input_shape = tuple(network.input_shape[1:])
        self.feature_taps = {}

    def call(self, inputs: Any, taps: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"logits": self.network(batch_image(inputs), training=False)}


class CarriedTeacher(Teacher):
    """Teacher logits computed ahead of training and carried in the batch."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(name="carried")
        self.num_classes = num_classes
        self.input_shape = SHAPE
        self.feature_taps = {}

    def call(self, inputs: Any, taps: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"logits": inputs["teacher_logits"]}


@pytest.fixture
def probability_gap() -> Iterator[TermSpec]:
    spec = terms.register(TermSpec("probability_gap", "PG", 1.0, False, ProbabilityGap))
    yield spec
    terms.unregister(spec.name)


def _batch(count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((count, *SHAPE)).astype(np.float32)
    return x, (x[..., 1] > 0.3).astype(np.int32)


def _student() -> keras.Model:
    return build_model("enet", SHAPE, 2, 0.125)


@pytest.mark.slow
def test_a_registered_term_trains_with_the_student(probability_gap: TermSpec) -> None:
    keras.utils.set_random_seed(0)
    teacher, student = build_model("unetpp", SHAPE, 2, 0.125), _student()
    config = DistillationConfig(lambdas={"probability_gap": 2.0})
    distiller = Distiller(teacher, student, config, SegmentationLoss())
    assert list(distiller.terms) == ["probability_gap"]
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [ops.convert_to_numpy(weight) for weight in student.trainable_weights]
    x, y = _batch()
    history = distiller.fit(x, y, batch_size=2, epochs=1, verbose=0).history
    assert {"loss", "segmentation", "probability_gap", "dice"} <= set(history)
    assert "logits" not in history  # the paper's terms are off
    gap = history["probability_gap"][0]
    assert np.isfinite(gap)
    assert gap > 0
    # eq. 8: the term enters the total with its weight
    assert history["loss"][0] == pytest.approx(history["segmentation"][0] + 2.0 * gap, rel=1e-5)
    after = [ops.convert_to_numpy(weight) for weight in student.trainable_weights]
    assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True))


def test_a_term_needing_features_the_teacher_lacks_is_named() -> None:
    keras.utils.set_random_seed(0)
    image = keras.Input(SHAPE)
    plain = keras.Model(image, keras.layers.Conv2D(2, 1)(image))
    message = (
        r"KMM needs the teacher's features at encoder, which teacher 'logits_only' does not "
        r"give \(its feature taps: none: it gives logits only\)"
    )
    with pytest.raises(ValueError, match=message):
        Distiller(LogitsOnlyTeacher(plain), _student(), DistillationConfig(), SegmentationLoss())
    # without KMM the same teacher serves
    config = DistillationConfig().only(["logits", "affinity"])
    distiller = Distiller(LogitsOnlyTeacher(plain), _student(), config, SegmentationLoss())
    x, y = _batch(2)
    assert np.isfinite(float(np.mean(distiller.compute_loss(x, y, distiller(x)))))

    teacher = KerasTeacher(build_model("unetpp", SHAPE, 2, 0.125))
    assert list(teacher.feature_taps) == ["encoder", "decoder"]
    low_level = DistillationConfig(kernel_pairs=(("encoder", "low_level"),))
    message = r"KMM needs the teacher's features at low_level, .* 'unetpp_teacher' .* encoder, dec"
    with pytest.raises(ValueError, match=message):
        Distiller(teacher, _student(), low_level, SegmentationLoss())


def test_teacher_predictions_carried_in_the_batch() -> None:
    keras.utils.set_random_seed(0)
    student = _student()
    x, y = _batch(2)
    teacher_logits = np.random.default_rng(1).standard_normal((2, 32, 32, 2)).astype(np.float32)
    config = DistillationConfig().only(["logits"])
    distiller = Distiller(CarriedTeacher(2), student, config, SegmentationLoss())
    batch = {"image": x, "teacher_logits": teacher_logits}
    distiller.compute_loss(batch, y, distiller(batch))
    expected = logits_kl(student(x, training=False), teacher_logits)
    assert float(distiller.trackers["logits"].result()) == pytest.approx(float(expected), rel=1e-5)


def test_a_term_reading_teacher_features_must_declare_it() -> None:
    class Peek(ProbabilityGap):
        teacher_taps = ("encoder",)

    spec = TermSpec("peek", "PK", 1.0, False, Peek)
    with pytest.raises(ValueError, match="needs_teacher_features=False"):
        spec.create(DistillationConfig(), 2)


def test_teacher_and_student_must_agree_on_classes() -> None:
    teacher = build_model("unetpp", SHAPE, 3, 0.125)
    with pytest.raises(ValueError, match="teacher predicts 3 classes, student 2"):
        Distiller(teacher, _student(), DistillationConfig(), SegmentationLoss())


def test_the_ramp_grows_the_terms_in_epoch_by_epoch() -> None:
    keras.utils.set_random_seed(0)
    teacher, student = build_model("unetpp", SHAPE, 2, 0.125), _student()
    config = DistillationConfig(ramp_fraction=0.5).only(["logits"])
    assert config.ramp_epochs(4) == 2
    distiller = Distiller(teacher, student, config, SegmentationLoss())
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch()
    history = distiller.fit(
        x, y, batch_size=2, epochs=4, verbose=0, callbacks=[DistillationRamp(distiller, 2)]
    ).history
    # eq. 8 with lambda scaled by 1/2, then 1, then 1 (ramped in over 2 epochs), per epoch
    for epoch, scale in enumerate((0.5, 1.0, 1.0, 1.0)):
        expected = history["segmentation"][epoch] + scale * 0.2 * history["logits"][epoch]
        assert history["loss"][epoch] == pytest.approx(expected, rel=1e-5)
    # a resumed run starts at its epoch's weight, not at the ramp's start
    DistillationRamp(distiller, 4).on_epoch_begin(1)
    assert float(distiller.distillation_scale) == pytest.approx(0.5)


def test_the_ramp_is_a_share_of_the_epochs() -> None:
    assert DistillationConfig().ramp_epochs(12) == 0
    assert DistillationConfig(ramp_fraction=0.25).ramp_epochs(12) == 3
    assert DistillationConfig(ramp_fraction=0.3).ramp_epochs(12) == 4  # whole epochs, up
    with pytest.raises(ValueError, match="ramp_fraction must lie in"):
        DistillationConfig(ramp_fraction=1.5)
    with pytest.raises(ValueError, match="at least one epoch"):
        DistillationRamp(None, 0)  # type: ignore[arg-type]
