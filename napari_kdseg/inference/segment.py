"""Whole-volume segmentation: the training preprocessing, batched slice inference, the exact
inverse map to the source grid, and SAML's largest-connected-component post-processing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from napari_kdseg.card import SYNTHETIC_ONLY_WARNING, ModelCard
from napari_kdseg.data.preprocess import Geometry, prepare_volume, stack_context
from napari_kdseg.data.provenance import is_phantom_scan
from napari_kdseg.data.volume import Volume
from napari_kdseg.inference.model import SegmentationModel
from napari_kdseg.inference.postprocess import count_components, largest_connected_component
from napari_kdseg.inference.quality import Calibration, QualityReport, assess, summarise_scan

# In-plane flips averaged by test-time augmentation (axes of a (n, rows, cols, c) batch).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (1,))


@dataclass
class Segmentation:
    """A label map on the source grid of the scan, seconds spent in each stage and, when
    asked for, the report on how far to trust it."""

    labels: npt.NDArray[np.uint8]
    seconds: dict[str, float] = field(default_factory=dict)
    quality: QualityReport | None = None


def scan_warnings(card: ModelCard, scan: Volume) -> list[str]:
    """What whoever reads the mask must know, in a clinician's words: a model trained only on
    synthetic scans applied to a real one (a scan that is not a phantom case)."""
    if card.synthetic_only and not is_phantom_scan(scan.metadata, scan.source):
        return [SYNTHETIC_ONLY_WARNING]
    return []


def softmax(logits: npt.NDArray[np.float32], axis: int = -1) -> npt.NDArray[np.float32]:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=axis, keepdims=True)


def slice_probabilities(
    image: npt.NDArray[np.float32],
    model: SegmentationModel,
    context: int,
    batch_size: int = 16,
    tta: bool = False,
) -> npt.NDArray[np.float32]:
    """Class probabilities of every slice of a preprocessed ``(slices, size, size)`` scan.

    With ``tta`` the probabilities are averaged over the identity and the two in-plane flips,
    so inference costs three times as much.
    """
    return _infer(image, model, context, batch_size, tta)[0]


def _infer(
    image: npt.NDArray[np.float32],
    model: SegmentationModel,
    context: int,
    batch_size: int,
    tta: bool,
    flip_masks: bool = False,
) -> tuple[npt.NDArray[np.float32], list[npt.NDArray[np.bool_]] | None]:
    """Mean class probabilities, and with ``flip_masks`` each flip pass's foreground mask
    (the quality report measures how much the passes disagree)."""
    flips = TTA_FLIPS if tta else TTA_FLIPS[:1]
    outputs = []
    masks: list[list[npt.NDArray[np.bool_]]] = [[] for _ in flips]
    for start in range(0, image.shape[0], batch_size):
        indices = range(start, min(start + batch_size, image.shape[0]))
        batch = np.stack([stack_context(image, z, context) for z in indices]).astype(np.float32)
        summed = np.zeros((*batch.shape[:3], len(model.class_names)), dtype=np.float32)
        for pass_index, axes in enumerate(flips):
            flipped = np.flip(batch, axis=axes) if axes else batch
            probabilities = softmax(model.predict(np.ascontiguousarray(flipped)))
            probabilities = np.flip(probabilities, axis=axes) if axes else probabilities
            summed += probabilities
            if flip_masks:
                masks[pass_index].append(probabilities[..., 0] < 0.5)
        outputs.append(summed / len(flips))
    passes = [np.concatenate(m) for m in masks] if flip_masks and len(flips) > 1 else None
    return np.concatenate(outputs), passes


def segment_prepared(
    image: npt.NDArray[np.float32],
    geometry: Geometry,
    model: SegmentationModel,
    batch_size: int = 16,
    tta: bool = False,
    largest_component: bool = True,
    quality: bool = False,
    calibration: Calibration | None = None,
) -> Segmentation:
    """Segment a scan already on the model grid (e.g. from the preprocessing cache).

    With ``quality`` the result carries a :class:`~napari_kdseg.inference.quality.QualityReport`
    (timed as the ``quality`` stage), comparing the scan with the card's training statistics;
    ``calibration`` defaults to the one shipped with the package.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    probabilities, flip_masks = _infer(
        image, model, model.preprocess.context, batch_size, tta, flip_masks=quality
    )
    seconds["infer"] = time.perf_counter() - started
    started = time.perf_counter()
    raw = geometry.probabilities_to_source(probabilities)
    labels = largest_connected_component(raw) if largest_component else raw
    seconds["postprocess"] = time.perf_counter() - started
    report = None
    if quality:
        started = time.perf_counter()
        report = assess(
            labels,
            probabilities,
            geometry,
            summarise_scan(image, geometry),
            model.model_card.training_statistics,
            components=count_components(raw),
            flip_masks=flip_masks,
            calibration=calibration,
        )
        seconds["quality"] = time.perf_counter() - started
    return Segmentation(labels.astype(np.uint8), seconds, report)


def segment(
    scan: Volume,
    model: SegmentationModel,
    batch_size: int = 16,
    tta: bool = False,
    largest_component: bool = True,
    quality: bool = True,
) -> Segmentation:
    """Segment ``scan`` with ``model``; the labels share the scan's grid (shape and affine).

    The result carries its quality report unless ``quality`` is False.
    """
    started = time.perf_counter()
    image, geometry = prepare_volume(scan, model.preprocess)
    preprocess_seconds = time.perf_counter() - started
    result = segment_prepared(
        image, geometry, model, batch_size, tta, largest_component, quality=quality
    )
    result.seconds = {"preprocess": preprocess_seconds, **result.seconds}
    return result
