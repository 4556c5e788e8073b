"""The napari reader and writer as plain functions: no viewer, no TensorFlow."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_kdseg import _reader
from napari_kdseg._layers import AXIS_LABELS, UNITS
from napari_kdseg._reader import get_reader, read_path, read_paths
from napari_kdseg._writer import affine_from_scale, write_labels
from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.phantom import generate_phantom
from napari_kdseg.data.volume import Volume


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-site phantom: sites A and B, two 32 x 32 cases each."""
    return generate_phantom(tmp_path_factory.mktemp("reader") / "phantom", 2, size=32, sites="AB")


def names_and_types(layers: list) -> list[tuple[str, str]]:
    return [(attributes["name"], kind) for _, attributes, kind in layers]


def test_dataset_root_opens_every_case_with_its_mask(dataset: Path) -> None:
    reader = get_reader(str(dataset))
    assert reader is not None
    layers = reader(str(dataset))
    assert names_and_types(layers) == [
        (f"{site}/Case0{index}{suffix}", kind)
        for site in "AB"
        for index in (0, 1)
        for suffix, kind in (("", "image"), (" prostate", "labels"))
    ]
    scan = read_volume(dataset / "B" / "Case01.nii.gz")
    data, attributes, _ = layers[6]
    assert attributes["name"] == "B/Case01"
    np.testing.assert_allclose(attributes["scale"], scan.spacing)
    np.testing.assert_array_equal(data, scan.array)
    geometry = attributes["metadata"]["kdseg"]
    np.testing.assert_allclose(geometry["affine"], scan.affine)
    assert geometry["source"] == str(dataset / "B" / "Case01.nii.gz")
    assert geometry["shape"] == list(scan.shape)
    mask, mask_attributes, _ = layers[7]
    assert mask.shape == data.shape
    assert mask.dtype == np.uint8
    assert set(np.unique(np.asarray(mask))) == {0, 1}
    np.testing.assert_allclose(mask_attributes["metadata"]["kdseg"]["affine"], scan.affine)
    for _, layer_attributes, _ in layers:
        assert layer_attributes["units"] == UNITS
        assert layer_attributes["axis_labels"] == AXIS_LABELS


def test_dataset_reads_only_the_first_case_until_the_others_are_shown(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    real_read = _reader._read

    def counting_read(path: Path, labels: bool = False) -> Volume:
        read.append(path.name)
        return real_read(path, labels)

    monkeypatch.setattr(_reader, "_read", counting_read)

    layers = read_path(dataset).layers

    assert read == ["Case00.nii.gz", "Case00_segmentation.nii.gz"], "only A/Case00 is read"
    assert [attributes["visible"] for _, attributes, _ in layers] == [True] * 2 + [False] * 6
    assert "contrast_limits" in layers[0][1], "the shown scan has its percentile contrast"
    assert "contrast_limits" not in layers[2][1], "napari takes a hidden scan's when shown"
    data, attributes, _ = layers[2]
    assert attributes["name"] == "A/Case01"
    assert attributes["metadata"]["kdseg"]["format"] == "nifti"
    assert data.shape == read_volume(dataset / "A" / "Case01.nii.gz").shape
    assert read == ["Case00.nii.gz", "Case00_segmentation.nii.gz"], "geometry came from headers"

    np.asarray(data[3])

    assert read[2:] == ["Case01.nii.gz"]


def test_a_hidden_case_damaged_after_opening_names_its_file_when_shown(
    dataset: Path, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    layers = read_path(root).layers
    damaged = root / "B" / "Case01_segmentation.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:-40])
    mask = next(data for data, attributes, _ in layers if attributes["name"] == "B/Case01 prostate")

    with pytest.raises(KdsegDataError) as raised:
        np.asarray(mask)

    assert raised.value.path == str(damaged)


def test_site_folder_opens_as_one_site(dataset: Path) -> None:
    reader = get_reader(str(dataset / "A"))
    assert reader is not None
    assert names_and_types(reader(str(dataset / "A"))) == [
        ("A/Case00", "image"),
        ("A/Case00 prostate", "labels"),
        ("A/Case01", "image"),
        ("A/Case01 prostate", "labels"),
    ]


def test_single_scan_opens_with_its_sibling_mask(dataset: Path) -> None:
    path = dataset / "A" / "Case01.nii.gz"
    reader = get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    assert names_and_types(layers) == [("Case01", "image"), ("Case01 prostate", "labels")]
    truth = read_volume(dataset / "A" / "Case01_segmentation.nii.gz", labels=True)
    np.testing.assert_array_equal(layers[1][0], truth.array)


def test_single_scan_layers_are_in_millimetres(dataset: Path) -> None:
    for _, attributes, _ in read_path(dataset / "A" / "Case01.nii.gz").layers:
        assert attributes["units"] == ("mm", "mm", "mm")
        assert attributes["axis_labels"] == ("slice", "row", "column")
        assert attributes["visible"]


def test_mask_file_alone_opens_as_labels(dataset: Path) -> None:
    path = dataset / "B" / "Case00_segmentation.nii.gz"
    layers = get_reader(str(path))(str(path))  # type: ignore[misc]
    assert names_and_types(layers) == [("Case00_segmentation", "labels")]
    mask = read_volume(path, labels=True)
    np.testing.assert_allclose(layers[0][1]["scale"], mask.spacing)
    np.testing.assert_allclose(layers[0][1]["metadata"]["kdseg"]["affine"], mask.affine)
    assert layers[0][1]["units"] == UNITS


def test_files_not_ours_are_refused_from_their_names(dataset: Path, tmp_path: Path) -> None:
    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert get_reader(str(picture)) is None
    assert get_reader(str(dataset / "phantom.json")) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert get_reader([str(dataset / "A" / "Case00.nii.gz"), str(picture)]) is None


@pytest.mark.parametrize(
    ("contents", "found"),
    [
        ({}, "it is empty"),
        ({"readme.txt": "no scans here"}, "it holds readme.txt"),
        (
            {f"slice{index}.png": "" for index in range(7)} | {"more/notes.txt": ""},
            "it holds more/, slice0.png, slice1.png, slice2.png, slice3.png and 3 more",
        ),
    ],
)
def test_a_folder_without_volumes_says_what_was_looked_for(
    tmp_path: Path, contents: dict[str, str], found: str
) -> None:
    folder = tmp_path / "foo"
    folder.mkdir()
    for name, text in contents.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    reader = get_reader(str(folder))
    assert reader is not None, "napari chose this plugin for the folder: it must explain"

    with pytest.raises(KdsegDataError) as raised:
        reader(str(folder))

    assert raised.value.path == str(folder)
    assert str(raised.value) == (
        f"{folder}: holds no MRI volumes: looked for NIfTI (.nii, .nii.gz) and MetaImage "
        "(.mhd, .mha) files, DICOM series folders, and site folders or dataset roots holding "
        f"them; {found}"
    )


def test_corrupt_file_error_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "Case07.nii.gz"
    broken.write_bytes(b"this is not gzip data at all")
    reader = get_reader(str(broken))
    assert reader is not None, "the name is ours, so the reader must try and explain"
    with pytest.raises(KdsegDataError) as raised:
        reader(str(broken))
    assert raised.value.path == str(broken)
    assert str(broken) in str(raised.value)


def test_broken_case_is_reported_and_the_rest_still_open(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    (root / "A" / "Case01.nii.gz").write_bytes(b"truncated")
    (root / "B" / "Case02.nii.gz").write_bytes((root / "B" / "Case00.nii.gz").read_bytes())
    warned: list[tuple[Path, list[str]]] = []
    monkeypatch.setattr(_reader, "_warn", lambda path, problems: warned.append((path, problems)))

    layers = read_paths(str(root))

    assert [name for name, _ in names_and_types(layers)] == [
        "A/Case00",
        "A/Case00 prostate",
        "B/Case00",
        "B/Case00 prostate",
        "B/Case01",
        "B/Case01 prostate",
        "B/Case02",  # an image without a mask still opens, and the missing mask is reported
    ]
    assert len(warned) == 1
    problems = warned[0][1]
    assert any("Case01.nii.gz" in line and "case skipped" in line for line in problems)
    assert any("Case02.nii.gz" in line and "image without mask" in line for line in problems)
    assert read_path(root).problems == problems


def test_writer_round_trip_keeps_the_scan_geometry(dataset: Path, tmp_path: Path) -> None:
    layers = read_path(dataset / "B" / "Case00.nii.gz").layers
    image, (mask, attributes, _) = layers[0], layers[1]
    edited = mask.copy()
    edited[edited.shape[0] // 2, :4, :4] = 2

    written = write_labels(str(tmp_path / "edited.nii.gz"), edited, attributes)

    assert written == [str(tmp_path / "edited.nii.gz")]
    back = read_volume(written[0], labels=True)
    scan = read_volume(dataset / "B" / "Case00.nii.gz")
    np.testing.assert_allclose(back.affine, scan.affine)
    np.testing.assert_array_equal(back.array, edited)
    stored = nib.load(written[0])
    assert stored.get_data_dtype() == np.uint8
    assert int(stored.header["qform_code"]) == 1
    assert image[1]["metadata"]["kdseg"]["shape"] == list(back.shape)
    assert [p.name for p in tmp_path.iterdir()] == ["edited.nii.gz"], "no temporary file left"


def test_writer_refuses_a_mask_of_another_shape(dataset: Path, tmp_path: Path) -> None:
    mask, attributes, _ = read_path(dataset / "B" / "Case00.nii.gz").layers[1]
    target = tmp_path / "wrong.nii.gz"
    with pytest.raises(ValueError, match=r"shape .* cannot be written in the scan's geometry"):
        write_labels(str(target), mask[:, :-1], attributes)
    rescaled = {**attributes, "scale": tuple(2 * s for s in attributes["scale"])}
    with pytest.raises(ValueError, match="differs from the voxel size"):
        write_labels(str(target), mask, rescaled)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_without_stored_geometry_uses_the_layer_scale(tmp_path: Path) -> None:
    labels = np.zeros((4, 5, 6), dtype=np.int32)
    labels[1, 2, 3] = 1
    written = write_labels(
        str(tmp_path / "drawn"), labels, {"scale": (3.0, 0.5, 0.25), "translate": (9, 8, 7)}
    )
    assert written == [str(tmp_path / "drawn.nii.gz")]
    back = read_volume(written[0], labels=True)
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.spacing, (3.0, 0.5, 0.25))
    np.testing.assert_allclose(back.affine, affine_from_scale((3.0, 0.5, 0.25), (9, 8, 7)))
    np.testing.assert_allclose(back.affine[:3, 3], (7, 8, 9))


def test_writer_refuses_labels_that_do_not_fit_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        write_labels(str(tmp_path / "big.nii.gz"), np.full((2, 2, 2), 300), {})
    with pytest.raises(ValueError, match="3D"):
        write_labels(str(tmp_path / "flat.nii.gz"), np.zeros((2, 2), dtype=np.uint8), {})


def test_dicom_series_folder_opens_as_one_image(dicom_series: list[Path]) -> None:
    folder = dicom_series[0]
    reader = get_reader(str(folder))
    assert reader is not None
    layers = reader(str(folder))
    assert names_and_types(layers) == [(folder.name, "image")]
    scan = read_volume(folder)
    data, attributes, _ = layers[0]
    assert data.shape == scan.shape
    np.testing.assert_allclose(attributes["scale"], scan.spacing)
    np.testing.assert_allclose(attributes["metadata"]["kdseg"]["affine"], scan.affine)


def test_folder_of_dicom_series_opens_each_series(dicom_series: list[Path]) -> None:
    root = dicom_series[0].parent
    layers = get_reader(str(root))(str(root))  # type: ignore[misc]
    assert names_and_types(layers) == [(f"{root.name}/{s.name}", "image") for s in dicom_series]


def test_real_promise12_case_opens_with_its_mask(promise12_case: tuple[Path, Path]) -> None:
    image_path, mask_path = promise12_case
    layers = read_path(image_path).layers
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    assert layers[1][1]["metadata"]["kdseg"]["source"] == str(mask_path)
    assert layers[1][0].shape == layers[0][0].shape
    assert layers[1][0].any()


def test_a_sibling_mask_on_another_grid_is_not_opened(dataset: Path, tmp_path: Path) -> None:
    """Same shape, other spacing: drawing it on the scan would put the prostate elsewhere."""
    image = tmp_path / "Case00.nii.gz"
    shutil.copy(dataset / "A" / "Case00.nii.gz", image)
    mask = nib.load(dataset / "A" / "Case00_segmentation.nii.gz")
    moved = mask.affine.copy()
    moved[:3, :3] *= 1.5
    nib.save(
        nib.Nifti1Image(np.asarray(mask.dataobj), moved), tmp_path / "Case00_segmentation.nii.gz"
    )
    result = read_path(str(image))
    assert names_and_types(result.layers) == [("Case00", "image")]
    assert len(result.problems) == 1
    assert "mask not opened" in result.problems[0]
    assert "does not lie on the grid of its image" in result.problems[0]


def test_a_sibling_mask_with_labels_beyond_uint8_is_not_opened(
    dataset: Path, tmp_path: Path
) -> None:
    """Masks are shown and saved as uint8: label 300 would silently become 44."""
    image = tmp_path / "Case00.nii.gz"
    shutil.copy(dataset / "A" / "Case00.nii.gz", image)
    mask = nib.load(dataset / "A" / "Case00_segmentation.nii.gz")
    labels = np.asarray(mask.dataobj).astype(np.int16) * 300
    nib.save(nib.Nifti1Image(labels, mask.affine), tmp_path / "Case00_segmentation.nii.gz")
    result = read_path(str(image))
    assert names_and_types(result.layers) == [("Case00", "image")]
    assert result.problems == [
        f"mask not opened: {tmp_path / 'Case00_segmentation.nii.gz'}: holds label 300; "
        "a scan's mask holds labels 0..255"
    ]
