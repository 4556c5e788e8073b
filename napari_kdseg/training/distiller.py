"""The Distiller: a frozen teacher teaching a student with the paper's eq. 8.

    Loss_Total = Loss_Seg + lambda1 Loss_Logits + lambda2 Loss_KM + lambda3 Loss_AA

Written as a ``keras.Model`` rather than on ``keras.distillation.Distiller``, because that
class mixes the student and distillation terms convexly (alpha, 1 - alpha) where eq. 8 adds
weighted terms, runs the student twice to reach its features, and owns no trainable weights
besides the student's; here the kernel-matrix adapters (trainable 1x1 convolutions) and the
adaptive-affinity size weights (learned by gradient ascent) train alongside the student.

``call`` runs the student once (logits and feature taps) and the teacher once in inference
mode; ``compute_loss`` adds the terms. Both go through Keras' own ``fit``, so callbacks,
``tf.distribute`` strategies and the JAX and PyTorch trainers work unchanged.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from napari_kdseg.losses import (
    AdaptiveAffinity,
    KernelMatrixAdapter,
    SegmentationLoss,
    logits_kl,
)
from napari_kdseg.losses._tensors import per_sample
from napari_kdseg.models import with_features
from napari_kdseg.training.config import DistillationConfig
from napari_kdseg.training.metrics import ForegroundDice


class Distiller(keras.Model):
    """Trains ``student`` from ground truth and from a frozen ``teacher`` (eq. 8)."""

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        config: DistillationConfig,
        segmentation_loss: SegmentationLoss,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.segmentation_loss = segmentation_loss
        self.lambdas = {name: float(config.lambdas.get(name, 0.0)) for name in config.enabled}
        pairs = config.kernel_pairs if "kernel_matrix" in self.lambdas else ()
        self.kernel_pairs = tuple(pairs)
        teacher.trainable = False
        self.teacher = with_features(teacher, sorted({t for _, t in pairs}))
        self.student = student
        self.student_features = with_features(student, sorted({s for s, _ in pairs}))
        self.adapters = []
        for s, t in pairs:
            adapter = KernelMatrixAdapter(
                teacher_channels=int(self.teacher.output[t].shape[-1]), name=f"kmm_{s}_to_{t}"
            )
            # Built now, not on first use: an optimizer built before the first step (always
            # under tf.distribute) must already see every trainable variable.
            adapter.build(self.student_features.output[s].shape, self.teacher.output[t].shape)
            self.adapters.append(adapter)
        num_classes = int(student.output.shape[-1])
        if int(teacher.output.shape[-1]) != num_classes:
            raise ValueError(
                f"teacher predicts {teacher.output.shape[-1]} classes, student {num_classes}"
            )
        self.affinity = (
            AdaptiveAffinity(
                sizes=config.affinity_sizes, margin=config.affinity_margin, num_classes=num_classes
            )
            if "affinity" in self.lambdas
            else None
        )
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss", "segmentation", *self.lambdas)
        }
        self.dice = ForegroundDice()
        self._reduce = _PerSampleLoss(name="total")
        self.built = True  # every variable exists: the networks are built, the adapters above

    def call(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        student = self.student_features(inputs, training=training)
        teacher = self.teacher(inputs, training=False)
        outputs = {"logits": student["logits"], "teacher_logits": teacher["logits"]}
        for s, t in self.kernel_pairs:
            outputs[f"student/{s}"] = student[s]
            outputs[f"teacher/{t}"] = teacher[t]
        return outputs

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
        student_logits = y_pred["logits"]
        teacher_logits = ops.stop_gradient(y_pred["teacher_logits"])
        terms = {"segmentation": self.segmentation_loss.batch_loss(y, student_logits)}
        if "logits" in self.lambdas:
            terms["logits"] = logits_kl(student_logits, teacher_logits, self.config.temperature)
        if "kernel_matrix" in self.lambdas:
            terms["kernel_matrix"] = sum(
                adapter(y_pred[f"student/{s}"], ops.stop_gradient(y_pred[f"teacher/{t}"]))
                for adapter, (s, t) in zip(self.adapters, self.kernel_pairs, strict=True)
            )
        if self.affinity is not None:
            teacher_labels = ops.argmax(teacher_logits, axis=-1)
            terms["affinity"] = self.affinity(student_logits, teacher_labels)
        total = terms["segmentation"]
        for name, weight in self.lambdas.items():
            total = total + weight * terms[name]
        if self.losses:
            total = total + ops.sum(self.losses)
        self.trackers["loss"].update_state(total)
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        self.dice.update_state(y, student_logits)
        # Reduced as Keras reduces its own losses, so that under tf.distribute each replica
        # contributes its share of the summed gradients (see per_sample).
        total = per_sample(total, student_logits)
        return self._reduce(total, total)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*self.trackers.values(), self.dice]


class _PerSampleLoss(keras.losses.Loss):
    """Keras' loss reduction applied to a loss already computed per sample."""

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return y_pred
