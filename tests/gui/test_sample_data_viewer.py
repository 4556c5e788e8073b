"""napari opens the phantom samples from the plugin's manifest and renders them."""

from __future__ import annotations


def test_viewer_opens_a_site_sample(make_napari_viewer) -> None:  # type: ignore[no-untyped-def]
    viewer = make_napari_viewer(show=True)  # a hidden canvas is never painted
    viewer.open_sample("napari-kdseg", "phantom_b")
    assert [layer.name for layer in viewer.layers] == [
        "phantom B/Case00",
        "phantom B/Case00 prostate",
    ]
    image, labels = viewer.layers
    assert tuple(image.scale) == tuple(labels.scale)
    screenshot = viewer.screenshot(canvas_only=True)
    assert screenshot[..., :3].std() > 10, "the canvas shows the scan, not a blank frame"
