"""Post-processing of predicted masks, as SAML does: keep the largest connected component."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

_NEIGHBOURS_26 = np.ones((3, 3, 3), dtype=bool)


def largest_connected_component(mask: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """The largest 26-connected foreground component of a 3D mask (empty stays empty).

    The prostate is one connected organ, so any other island is a false positive.
    """
    mask = np.asarray(mask) > 0
    components, count = ndimage.label(mask, structure=_NEIGHBOURS_26)
    if count <= 1:
        return mask.astype(np.uint8)
    sizes = np.bincount(components.ravel())[1:]
    return (components == 1 + int(np.argmax(sizes))).astype(np.uint8)


def count_components(mask: npt.ArrayLike) -> int:
    """How many 26-connected foreground components ``mask`` has (before the largest is kept)."""
    return int(ndimage.label(np.asarray(mask) > 0, structure=_NEIGHBOURS_26)[1])
