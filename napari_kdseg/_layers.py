"""Volumes as napari layer data: pure tuples, so readers and samples need no viewer."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_kdseg.data.volume import Volume

LayerData = tuple[Any, dict[str, Any], str]


def volume_layers(image: Volume, label: Volume | None, name: str) -> list[LayerData]:
    """An image layer (and a labels layer for its mask) in millimetres.

    ``scale`` is the voxel spacing so distances in the viewer are real; the full affine, the
    array shape and the source path travel in ``metadata`` so a result drawn on these layers
    can be checked and written back in the scan's own geometry.
    """
    geometry = {
        "affine": image.affine.tolist(),
        "shape": list(image.shape),
        "source": str(image.source or ""),
    }
    low, high = np.percentile(image.array, [0.5, 99.5])
    layers: list[LayerData] = [
        (
            image.array,
            {
                "name": name,
                "scale": image.spacing,
                "colormap": "gray",
                "contrast_limits": (float(low), float(high) if high > low else float(low) + 1.0),
                "metadata": {"kdseg": {**geometry, **_plain(image.metadata)}},
            },
            "image",
        )
    ]
    if label is not None:
        layers.append(
            (
                np.asarray(label.array, dtype=np.uint8),
                {
                    "name": f"{name} prostate",
                    "scale": label.spacing,
                    "opacity": 0.4,
                    "metadata": {"kdseg": {**geometry, "source": str(label.source or "")}},
                },
                "labels",
            )
        )
    return layers


def _plain(metadata: dict[str, Any]) -> dict[str, Any]:
    """Keep JSON-like metadata only (napari copies it around)."""
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool | None)}
