"""napari sample data: one generated phantom case per site (nothing is downloaded).

Each site opens as its scan and its prostate mask, so a new user can see in the viewer what
sets the sites apart (field of view, coil shading, contrast, noise, slice thickness).
"""

from __future__ import annotations

from napari_kdseg._layers import LayerData, volume_layers
from napari_kdseg.data.phantom import make_case

# Big enough to look like MRI, small enough to appear in about a second.
SAMPLE_SIZE = 256


def phantom_site(site: str) -> list[LayerData]:
    """Case 0 of phantom site ``site`` as an image layer and a labels layer."""
    image, label = make_case(site, 0, size=SAMPLE_SIZE, seed=0)
    return volume_layers(image, label, name=f"phantom {site}/Case00")


def site_a() -> list[LayerData]:
    return phantom_site("A")


def site_b() -> list[LayerData]:
    return phantom_site("B")


def site_c() -> list[LayerData]:
    return phantom_site("C")


def site_d() -> list[LayerData]:
    return phantom_site("D")


def site_e() -> list[LayerData]:
    return phantom_site("E")


def site_f() -> list[LayerData]:
    return phantom_site("F")
