"""What the Distiller asks of a teacher, and the teacher trained here: a Keras model.

A :class:`Teacher` gives, for a batch, its logits and, where it has them, its features at
named taps, in inference mode and with no gradient flowing back. The Distiller hands it the
whole batch input ``x`` and feeds the student :func:`batch_image` of it, so a teacher can
read more than the image: ``x`` is either the image batch ``(batch, H, W, channels)`` or a
dict holding it under ``"image"`` beside anything else the data pipeline carries (teacher
predictions computed once ahead of training, say, which a teacher returns as they are). An
ONNX teacher, or such a precomputed one, is a new subclass; the Distiller does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from napari_kdseg.distillation.base import Shape, Tensor
from napari_kdseg.models import feature_taps, with_features

#: The key of the image in a batch input given as a dict.
IMAGE = "image"
#: The key of the per-sample flag (1.0 or 0.0) saying which samples have a mask.
LABELLED = "labelled"
#: The key of the per-sample flag (1.0 or 0.0) saying which samples' scans have a ground-truth
#: mask of their own (a teacher's mask standing in for one counts under ``"labelled"`` only).
HAS_GROUND_TRUTH = "has_ground_truth"
#: The key of teacher logits computed ahead of training, ``(batch, H, W, classes)``.
TEACHER_LOGITS = "teacher_logits"


def batch_image(inputs: Any) -> Tensor:
    """The image batch of a batch input: ``inputs`` itself, or ``inputs["image"]``."""
    return inputs[IMAGE] if isinstance(inputs, dict) else inputs


class Teacher(keras.layers.Layer):
    """A frozen teacher, as the Distiller sees it.

    Subclasses set, in ``__init__``:

    - ``num_classes``: the classes of its logits;
    - ``input_shape``: ``(H, W, channels)`` of one image;
    - ``feature_taps``: tap name -> feature shape ``(batch, h, w, channels)`` for every tap
      it can give; empty for a teacher that gives logits only;

    and implement ``call(inputs, taps)`` returning ``{"logits": ..., tap: ...}`` for each of
    ``taps`` (a subset of ``feature_taps``), in inference mode. A Keras layer, so that the
    Distiller tracks the teacher's (non-trainable) weights.
    """

    num_classes: int
    input_shape: tuple[int, ...]
    feature_taps: dict[str, Shape]

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        kwargs.setdefault("autocast", False)  # the network casts its inputs itself
        super().__init__(**kwargs)

    def outputs(self, inputs: Any, taps: Sequence[str] = ()) -> dict[str, Tensor]:
        """``{"logits": ..., tap: ...}`` for the batch input ``inputs``, gradient stopped."""
        return {
            key: ops.stop_gradient(value) for key, value in self(inputs, taps=tuple(taps)).items()
        }

    def call(self, inputs: Any, taps: tuple[str, ...] = ()) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define call(inputs, taps)")


class KerasTeacher(Teacher):
    """A segmentation model built by :func:`napari_kdseg.models.build_model` (and trained,
    or loaded from its ``.keras``), frozen, with every feature tap of its architecture."""

    def __init__(self, model: keras.Model, **kwargs: Any) -> None:
        kwargs.setdefault("name", f"{model.name}_teacher")
        super().__init__(**kwargs)
        model.trainable = False
        # Every tap: each lies on the way to the logits, so exposing them costs nothing.
        self.network = with_features(model, list(feature_taps(model)))
        self.num_classes = int(model.output.shape[-1])
        self.input_shape = tuple(model.input_shape[1:])
        self.feature_taps = {
            tap: tuple(output.shape)
            for tap, output in self.network.output.items()
            if tap != "logits"
        }

    def call(self, inputs: Any, taps: tuple[str, ...] = ()) -> dict[str, Tensor]:
        outputs = self.network(batch_image(inputs), training=False)
        return {"logits": outputs["logits"]} | {tap: outputs[tap] for tap in taps}


class PrecomputedTeacher(Teacher):
    """A teacher whose logits were computed ahead of training and travel in the batch, under
    ``"teacher_logits"`` (see :class:`~napari_kdseg.training.pipeline.SliceDataset`'s
    ``teacher_maps``): a 3D model such as TAPS, run once per scan, or any teacher whose
    predictions are cached. It has no feature taps, so terms reading the teacher's features
    (KMM) cannot use it; LM and AAM can.

    ``name`` identifies the teacher in messages (``"taps"``); ``input_shape`` is the
    student's ``(H, W, channels)``.
    """

    def __init__(
        self, num_classes: int, input_shape: tuple[int, ...], name: str = "precomputed"
    ) -> None:
        super().__init__(name=name)
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        self.feature_taps = {}

    def call(self, inputs: Any, taps: tuple[str, ...] = ()) -> dict[str, Tensor]:
        if not isinstance(inputs, dict) or TEACHER_LOGITS not in inputs:
            carried = sorted(inputs) if isinstance(inputs, dict) else "the image alone"
            raise ValueError(
                f"teacher {self.name!r} reads its logits from the batch under "
                f"{TEACHER_LOGITS!r}, but the batch carries {carried}; give the data pipeline "
                "the teacher's maps (SliceDataset(teacher_maps=...))"
            )
        logits = inputs[TEACHER_LOGITS]
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"teacher {self.name!r}: the batch's {TEACHER_LOGITS!r} have "
                f"{logits.shape[-1]} classes, expected {self.num_classes}"
            )
        return {"logits": ops.cast(logits, "float32")}
