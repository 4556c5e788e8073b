"""Contour figures as in the paper's Figure 3: ground truth in red, prediction in green."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from napari_kdseg.core.atomic import versioned_path
from napari_kdseg.evaluation.metrics import dice

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TRUTH_COLOUR, PREDICTION_COLOUR = "red", "lime"


@dataclass(frozen=True)
class ContourRow:
    """One scan: its array, ground truth and named predictions, all on the source grid."""

    title: str
    scan: npt.NDArray[np.floating]
    truth: npt.NDArray[np.integer]
    predictions: Mapping[str, npt.NDArray[np.integer]]


def central_slice(truth: npt.NDArray[np.integer]) -> int:
    """The slice with the most ground truth (the gland's widest section)."""
    areas = (np.asarray(truth) > 0).reshape(truth.shape[0], -1).sum(axis=1)
    return int(np.argmax(areas)) if areas.any() else truth.shape[0] // 2


def contour_figure(rows: Sequence[ContourRow], path: Path, columns: Sequence[str]) -> Path:
    """A grid of slices, one row per scan and one column per prediction, each with the
    ground-truth (red) and predicted (green) outlines and that slice's Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(rows),
        len(columns),
        figsize=(3.0 * len(columns), 3.0 * len(rows)),
        dpi=110,
        squeeze=False,
    )
    for row_axes, row in zip(axes, rows, strict=True):
        index = central_slice(row.truth)
        image = row.scan[index]
        low, high = np.percentile(image, (1, 99))
        for axis, column in zip(row_axes, columns, strict=True):
            prediction = row.predictions[column][index]
            axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            _outline(axis, row.truth[index], TRUTH_COLOUR)
            _outline(axis, prediction, PREDICTION_COLOUR)
            axis.set_title(
                f"{row.title} z={index}\n{column}: slice Dice "
                f"{dice(prediction, row.truth[index]):.2f}",
                fontsize=8,
            )
            axis.axis("off")
    figure.suptitle("ground truth (red) and prediction (green)", fontsize=9)
    figure.tight_layout()
    with versioned_path(path) as written:
        figure.savefig(written.tmp, format="png")
    plt.close(figure)
    return written.path


def _outline(axis: Axes, mask: npt.NDArray[np.integer], colour: str) -> None:
    if np.any(mask):
        axis.contour(np.asarray(mask) > 0, levels=[0.5], colors=colour, linewidths=1.2)
