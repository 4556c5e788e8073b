"""The Distiller: a frozen teacher teaching a student with the paper's eq. 8.

    Loss_Total = Loss_Seg + sum_k lambda_k Loss_k

over the distillation terms switched on in the configuration (the paper's: lambda1..3 Loss_Logits,
Loss_KM, Loss_AA; see :mod:`napari_kdseg.distillation.terms` for the registry). Optionally
(``DistillationConfig.ramp_fraction``, not in the paper) every lambda_k is scaled by a factor
that grows from 1/n to 1 over the first n epochs (:class:`DistillationRamp`).

Written as a ``keras.Model`` rather than on ``keras.distillation.Distiller``, because that
class mixes the student and distillation terms convexly (alpha, 1 - alpha) where eq. 8 adds
weighted terms, runs the student twice to reach its features, and owns no trainable weights
besides the student's; here the terms' own weights (the kernel-matrix adapters, trainable
1x1 convolutions, and the adaptive-affinity size weights, learned by gradient ascent) train
alongside the student.

``call`` runs the student once (logits and the feature taps the terms read) and the teacher
once in inference mode; ``compute_loss`` adds the terms. A batch input carrying
``"labelled"`` (a distillation that also learns from scans without masks, see
:class:`~napari_kdseg.training.pipeline.SliceDataset`) takes Loss_Seg and the Dice metric
from its labelled samples only. The terms read every sample, or with
``DistillationConfig.distil_on="unlabelled"`` only the samples whose scan has no ground-truth
mask (``"has_ground_truth"`` 0 in the batch input): each is then the term of those samples
alone, 0 in a batch without any. Both go through Keras' own ``fit``, so callbacks,
``tf.distribute`` strategies and the JAX and PyTorch trainers work unchanged.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from napari_kdseg.distillation import terms
from napari_kdseg.distillation.base import DistillationTerm
from napari_kdseg.distillation.teacher import (
    HAS_GROUND_TRUTH,
    LABELLED,
    KerasTeacher,
    Teacher,
    batch_image,
)
from napari_kdseg.losses import SegmentationLoss
from napari_kdseg.losses._tensors import per_sample
from napari_kdseg.losses.segmentation import cross_entropy, dice_loss, focal_loss
from napari_kdseg.models import with_features
from napari_kdseg.training.config import DistillationConfig
from napari_kdseg.training.metrics import ForegroundDice


class Distiller(keras.Model):
    """Trains ``student`` from ground truth and from a frozen ``teacher`` (eq. 8).

    ``teacher`` is a :class:`~napari_kdseg.distillation.teacher.Teacher`, or a Keras model
    built by :func:`napari_kdseg.models.build_model` (taken as a ``KerasTeacher``). The batch
    input ``x`` goes to the teacher whole, and to the student as its image (``x`` itself, or
    ``x["image"]``; see :func:`~napari_kdseg.distillation.teacher.batch_image`).
    """

    def __init__(
        self,
        teacher: Teacher | keras.Model,
        student: keras.Model,
        config: DistillationConfig,
        segmentation_loss: SegmentationLoss,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.segmentation_loss = segmentation_loss
        self.teacher = teacher if isinstance(teacher, Teacher) else KerasTeacher(teacher)
        num_classes = int(student.output.shape[-1])
        if self.teacher.num_classes != num_classes:
            raise ValueError(
                f"teacher predicts {self.teacher.num_classes} classes, student {num_classes}"
            )
        self.student = student
        self.lambdas = {name: float(config.lambdas[name]) for name in config.enabled}
        self.terms: dict[str, DistillationTerm] = {
            name: terms.get(name).create(config, num_classes) for name in self.lambdas
        }
        for name, term in self.terms.items():
            self._check_teacher_has(name, term.teacher_taps)
        self.student_features = with_features(
            student, sorted({tap for term in self.terms.values() for tap in term.student_taps})
        )
        self.teacher_taps = tuple(
            sorted({tap for term in self.terms.values() for tap in term.teacher_taps})
        )
        for term in self.terms.values():
            # Built now, not on first use: an optimizer built before the first step (always
            # under tf.distribute) must already see every trainable variable.
            term.build(
                {tap: self.student_features.output[tap].shape for tap in term.student_taps},
                {tap: self.teacher.feature_taps[tap] for tap in term.teacher_taps},
            )
        # Multiplies every term's weight; DistillationRamp grows it in over the first epochs.
        self.distillation_scale = keras.Variable(
            1.0, trainable=False, dtype="float32", name="distillation_scale"
        )
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss", "segmentation", *self.terms)
        }
        self.dice = ForegroundDice()
        self._reduce = _PerSampleLoss(name="total")
        self.built = True  # every variable exists: the networks are built, the terms above

    def _check_teacher_has(self, name: str, taps: tuple[str, ...]) -> None:
        missing = [tap for tap in taps if tap not in self.teacher.feature_taps]
        if missing:
            short = terms.get(name).short_name
            has = ", ".join(self.teacher.feature_taps) or "none: it gives logits only"
            raise ValueError(
                f"{short} needs the teacher's features at {', '.join(missing)}, which teacher "
                f"{self.teacher.name!r} does not give (its feature taps: {has}); switch {short} "
                "off or use a teacher with those features"
            )

    def call(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        student = self.student_features(batch_image(inputs), training=training)
        teacher = self.teacher.outputs(inputs, self.teacher_taps)
        return {"logits": student["logits"], "student": student, "teacher": teacher}

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        if y_pred is None:
            y_pred = self(x, training=training)
        student, teacher = y_pred["student"], y_pred["teacher"]
        logits = student["logits"]
        labelled = x.get(LABELLED) if isinstance(x, dict) else None
        if labelled is None:
            segmentation = self.segmentation_loss.batch_loss(y, logits)
        else:
            y, logits = labelled_only(y, logits, labelled)
            segmentation = labelled_segmentation(self.segmentation_loss, y, logits, labelled)
        values = {"segmentation": segmentation}
        total = segmentation
        scale = ops.cast(self.distillation_scale, total.dtype)
        distilled = self._distilled_samples(x)
        for name, term in self.terms.items():
            if distilled is None:
                values[name] = term(student, teacher)
            else:
                values[name] = term(student, teacher, sample_weight=distilled)
            total = total + scale * self.lambdas[name] * values[name]
        if self.losses:
            total = total + ops.sum(self.losses)
        self.trackers["loss"].update_state(total)
        for name, value in values.items():
            self.trackers[name].update_state(value)
        self.dice.update_state(y, logits, labelled)  # the labelled samples only, as above
        # Reduced as Keras reduces its own losses, so that under tf.distribute each replica
        # contributes its share of the summed gradients (see per_sample).
        total = per_sample(total, student["logits"])
        return self._reduce(total, total)

    def _distilled_samples(self, x: Any) -> Any:
        """The terms' ``sample_weight``: 1 for the samples without a ground-truth mask, 0 for
        the others, where the terms read those alone; ``None`` where they read every one."""
        if self.config.distil_on == "all":
            return None
        if not isinstance(x, dict) or HAS_GROUND_TRUTH not in x:
            raise ValueError(
                f"distil_on={self.config.distil_on!r} reads which samples have a ground-truth "
                f"mask from the batch's {HAS_GROUND_TRUTH!r}, which it does not carry; give "
                "the data pipeline SliceDataset(flag_ground_truth=True)"
            )
        return 1.0 - ops.cast(x[HAS_GROUND_TRUTH], "float32")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*self.trackers.values(), self.dice]


#: The logit margin that makes an unlabelled sample a confident, correct background
#: prediction: exp(-1e4) is 0 in float32 and float16 alike (and 1e4 fits in float16).
_NEUTRAL_MARGIN = 1e4


def labelled_only(y: Any, logits: Any, labelled: Any) -> tuple[Any, Any]:
    """``y`` and ``logits`` with every unlabelled sample (``labelled`` 0) replaced by a
    neutral one: background everywhere, predicted as background with certainty.

    A neutral sample adds exactly 0 to Dice's foreground sums, to the cross-entropy and focal
    sums and to :class:`ForegroundDice`'s counts, and passes no gradient to the student (the
    replacement is a constant). ``labelled`` is ``(batch,)``, 1 or 0 per sample.
    """
    keep = ops.reshape(ops.cast(labelled, "float32") > 0.5, (-1, 1, 1))
    labels = ops.cast(ops.reshape(y, ops.shape(logits)[:-1]), "int32")
    labels = ops.where(keep, labels, ops.zeros_like(labels))
    classes = int(logits.shape[-1])
    neutral = ops.convert_to_tensor([0.0] + [-_NEUTRAL_MARGIN] * (classes - 1), dtype=logits.dtype)
    logits = ops.where(ops.expand_dims(keep, -1), logits, neutral)
    return labels, logits


def labelled_segmentation(loss: SegmentationLoss, y: Any, logits: Any, labelled: Any) -> Any:
    """Loss_Seg over the labelled samples of a batch, from :func:`labelled_only`'s ``y`` and
    ``logits``: what ``loss.batch_loss`` gives on those samples alone, and 0 (not NaN) for a
    batch with none. Dice pools over the batch, so the neutral samples leave it unchanged;
    the cross-entropy (or focal) term is a mean over every pixel, rescaled to the labelled
    samples' pixels."""
    if loss.include_background:
        raise ValueError(
            "a segmentation loss whose Dice includes the background cannot skip unlabelled "
            "samples (their background would count); use include_background=False"
        )
    dice = dice_loss(y, logits, loss.smooth, loss.include_background)
    if loss.kind == "dice+focal":
        pixelwise = focal_loss(y, logits, loss.gamma, loss.alpha)
    else:
        pixelwise = cross_entropy(y, logits)
    weight = ops.cast(labelled, pixelwise.dtype)
    batch = ops.cast(ops.shape(weight)[0], pixelwise.dtype)
    return dice + pixelwise * batch / ops.maximum(ops.sum(weight), 1.0)


class DistillationRamp(keras.callbacks.Callback):
    """Grows the distillation weights in linearly over the first ``epochs`` epochs: epoch
    ``e`` (counted from 0, so also after a resume) trains at ``min(1, (e + 1) / epochs)`` of
    them, which lets the student fit the labels before the teacher's terms weigh fully."""

    def __init__(self, distiller: Distiller, epochs: int) -> None:
        super().__init__()
        if epochs < 1:
            raise ValueError(f"ramp over at least one epoch, got {epochs}")
        self.distiller, self.epochs = distiller, epochs

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.distiller.distillation_scale.assign(min(1.0, (epoch + 1) / self.epochs))


class _PerSampleLoss(keras.losses.Loss):
    """Keras' loss reduction applied to a loss already computed per sample."""

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return y_pred
