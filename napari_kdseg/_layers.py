"""Volumes as napari layer data: pure tuples, so readers and samples need no viewer.

Every layer is in millimetres: ``scale`` is the voxel spacing, ``units`` makes the scale bar
read mm, and the axes carry the names of :class:`~napari_kdseg.data.volume.Volume`'s array
order, so the slider says "slice". The scan's affine, array shape and source path travel in
``metadata['kdseg']``, so a result drawn on a layer can be checked and written back in the
scan's own geometry. The data may be any array napari takes (a dask array read when shown).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_kdseg.data.volume import Volume

LayerData = tuple[Any, dict[str, Any], str]

#: Names of the array axes ``(k, j, i)``: napari shows the first on its slider.
AXIS_LABELS = ("slice", "row", "column")
#: World units of every axis: ``scale`` is the voxel spacing in mm.
UNITS = ("mm", "mm", "mm")
MASK_OPACITY = 0.4


def geometry(affine: np.ndarray, shape: tuple[int, ...], source: object) -> dict[str, Any]:
    """What ``metadata['kdseg']`` holds for a volume: affine, array shape and source path."""
    return {
        "affine": np.asarray(affine).tolist(),
        "shape": list(shape),
        "source": str(source or ""),
    }


def image_layer(
    data: Any,
    name: str,
    spacing: tuple[float, ...],
    metadata: dict[str, Any],
    *,
    contrast_limits: tuple[float, float] | None = None,
    visible: bool = True,
) -> LayerData:
    """A grey image layer in mm. Without ``contrast_limits`` napari takes the range of the
    first slice it shows, which reads no voxel before the layer is shown."""
    attributes: dict[str, Any] = {
        "name": name,
        "scale": spacing,
        "units": UNITS,
        "axis_labels": AXIS_LABELS,
        "colormap": "gray",
        "visible": visible,
        "metadata": {"kdseg": metadata},
    }
    if contrast_limits is not None:
        attributes["contrast_limits"] = contrast_limits
    return data, attributes, "image"


def labels_layer(
    data: Any,
    name: str,
    spacing: tuple[float, ...],
    metadata: dict[str, Any],
    *,
    visible: bool = True,
) -> LayerData:
    """A half-transparent labels layer in mm."""
    attributes = {
        "name": name,
        "scale": spacing,
        "units": UNITS,
        "axis_labels": AXIS_LABELS,
        "opacity": MASK_OPACITY,
        "visible": visible,
        "metadata": {"kdseg": metadata},
    }
    return data, attributes, "labels"


def volume_layers(image: Volume, label: Volume | None, name: str) -> list[LayerData]:
    """An image layer (and a labels layer ``<name> prostate`` for its mask), read already.

    The contrast spans the 0.5-99.5 percentiles of the whole scan, so one bright spot (fat
    beside an endorectal coil) does not darken the gland.
    """
    scan_geometry = geometry(image.affine, image.shape, image.source)
    low, high = (float(value) for value in np.percentile(image.array, [0.5, 99.5]))
    layers = [
        image_layer(
            image.array,
            name,
            image.spacing,
            {**scan_geometry, **_plain(image.metadata)},
            contrast_limits=(low, high if high > low else low + 1.0),
        )
    ]
    if label is not None:
        layers.append(
            labels_layer(
                np.asarray(label.array, dtype=np.uint8),
                f"{name} prostate",
                label.spacing,
                {**scan_geometry, "source": str(label.source or "")},
            )
        )
    return layers


def _plain(metadata: dict[str, Any]) -> dict[str, Any]:
    """Keep JSON-like metadata only (napari copies it around)."""
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool | None)}
