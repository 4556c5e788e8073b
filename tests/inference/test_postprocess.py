from __future__ import annotations

import numpy as np

from napari_kdseg.inference.postprocess import largest_connected_component


def test_keeps_the_largest_island_with_diagonal_contacts() -> None:
    mask = np.zeros((4, 10, 10), dtype=np.uint8)
    mask[1:3, 1:5, 1:5] = 1  # 32 voxels
    mask[3, 5, 5] = 1  # touches the big block only at a corner: same 26-component
    mask[0, 8:10, 8:10] = 1  # a separate island of 4
    kept = largest_connected_component(mask)
    assert kept.sum() == 33
    assert kept[0, 9, 9] == 0
    assert kept[3, 5, 5] == 1


def test_empty_and_single_component_masks_are_unchanged() -> None:
    empty = np.zeros((2, 3, 3), dtype=np.uint8)
    assert largest_connected_component(empty).sum() == 0
    one = np.zeros((2, 3, 3), dtype=np.uint8)
    one[0, 1, 1] = 1
    assert np.array_equal(largest_connected_component(one), one)
