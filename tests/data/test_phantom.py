"""The synthetic multi-site phantom: determinism, geometry, site differences, files on disk.

Cases are small (64 x 64 in plane) so the whole file runs in seconds; the measurements use
the generator's tissue map only to choose regions, and read intensities from the image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.phantom import SITES, generate_phantom, image_case, make_case
from napari_kdseg.data.phantom import generate as generate_module
from napari_kdseg.data.phantom.acquisition import ImagedCase
from napari_kdseg.data.phantom.anatomy import Tissue
from napari_kdseg.data.volume import Volume

SIZE = 64


@pytest.fixture(scope="module")
def cases() -> dict[str, list[ImagedCase]]:
    """Three cases per site at the test size, generated once for the module."""
    return {site: [image_case(site, index, SIZE) for index in range(3)] for site in SITES}


def _gland_centre_mm(case: ImagedCase) -> tuple[float, float]:
    """Row and column position (mm from the first pixel) of the labelled gland's centroid."""
    _, rows, columns = np.nonzero(case.label)
    spacing = case.geometry.spacing_mm
    return float(rows.mean()) * spacing, float(columns.mean()) * spacing


def _gland_slices(case: ImagedCase) -> npt.NDArray[np.bool_]:
    """A volume mask selecting the slices that hold gland."""
    holds_gland = case.label.any(axis=(1, 2))
    return np.broadcast_to(holds_gland[:, None, None], case.label.shape)


def _noise_snr(first: ImagedCase, second: ImagedCase) -> float:
    """Fat SNR where the coil sensitivity is about one, by the two-acquisition method.

    Same patient, same scan, independent noise: the difference image holds noise only,
    with sqrt(2) times the noise of one image.
    """
    region = (first.tissues == Tissue.FAT) & (first.sensitivity > 0.8) & (first.sensitivity < 1.25)
    difference = (first.image - second.image)[region]
    signal = ((first.image + second.image) / 2)[region]
    return float(signal.mean() / (difference.std() / np.sqrt(2)))


def test_same_arguments_give_bit_identical_volumes() -> None:
    image_a, label_a = make_case("C", 3, SIZE, seed=7)
    image_b, label_b = make_case("C", 3, SIZE, seed=7)
    assert np.array_equal(image_a.array, image_b.array)
    assert np.array_equal(label_a.array, label_b.array)
    assert np.array_equal(image_a.affine, image_b.affine)


def test_another_seed_or_case_gives_another_volume() -> None:
    image, _ = make_case("A", 0, SIZE, seed=0)
    for other, _ in (make_case("A", 0, SIZE, seed=1), make_case("A", 1, SIZE, seed=0)):
        same_shape = other.shape == image.shape
        assert not same_shape or not np.array_equal(other.array, image.array)


def test_repeat_changes_only_the_noise() -> None:
    first, second = image_case("D", 0, SIZE), image_case("D", 0, SIZE, repeat=1)
    assert np.array_equal(first.tissues, second.tissues)
    assert np.array_equal(first.label, second.label)
    assert not np.array_equal(first.image, second.image)
    # Same signal: the two images agree to within the noise.
    assert abs(float(first.image.mean() / second.image.mean()) - 1) < 0.01


@pytest.mark.parametrize("site", list(SITES))
def test_image_and_label_share_one_lps_grid(site: str) -> None:
    image, label = make_case(site, 0, SIZE)
    assert image.array.dtype == np.float32
    assert label.array.dtype == np.uint8
    assert image.shape == label.shape
    assert image.shape[1:] == (SIZE, SIZE)
    assert np.array_equal(image.affine, label.affine)
    assert image.orientation == "LPS"
    assert set(np.unique(label.array).tolist()) == {0, 1}
    assert image.metadata["site"] == site


@pytest.mark.parametrize("site", list(SITES))
def test_gland_volume_is_plausible(cases: dict[str, list[ImagedCase]], site: str) -> None:
    for case in cases[site]:
        geometry = case.geometry
        voxel_cc = geometry.spacing_mm**2 * geometry.slice_thickness_mm / 1000
        volume_cc = float(case.label.sum()) * voxel_cc
        assert 12.0 < volume_cc < 100.0, f"{site}: gland of {volume_cc:.1f} cc"


def test_gland_volume_does_not_depend_on_matrix_size() -> None:
    volumes = []
    for size in (SIZE, 2 * SIZE):
        image, label = make_case("B", 1, size)
        voxel_cc = float(np.prod(image.spacing)) / 1000
        volumes.append(float(label.array.sum()) * voxel_cc)
    assert volumes[0] == pytest.approx(volumes[1], rel=0.08)


def test_label_is_the_whole_gland_and_nothing_else(cases: dict[str, list[ImagedCase]]) -> None:
    gland_tissues = [
        Tissue.PROSTATE_CAPSULE,
        Tissue.PERIPHERAL_ZONE,
        Tissue.CENTRAL_GLAND,
        Tissue.FIBROMUSCULAR_STROMA,
        Tissue.URETHRA,
    ]
    for site, site_cases in cases.items():
        for case in site_cases:
            in_gland = np.isin(case.tissues, gland_tissues)
            labelled = case.label > 0
            # Partial volume through the slice decides the label, so the edges may differ.
            assert (in_gland & labelled).sum() > 0.85 * labelled.sum(), site
            assert (in_gland & labelled).sum() > 0.85 * in_gland.sum(), site
            assert not np.any(labelled & (case.tissues == Tissue.SEMINAL_VESICLE)), site


def test_spacing_and_thickness_follow_each_site_protocol(
    cases: dict[str, list[ImagedCase]],
) -> None:
    fov = {}
    for site, site_cases in cases.items():
        protocol = SITES[site]
        for case in site_cases:
            geometry = case.geometry
            image = Volume(case.image, geometry.affine)
            slice_mm, row_mm, column_mm = image.spacing
            assert row_mm == pytest.approx(column_mm)
            native = row_mm * SIZE / 384
            low, high = protocol.in_plane_spacing_mm
            assert low - 1e-9 <= native <= high + 1e-9, site
            low, high = protocol.slice_thickness_mm
            assert low - 1e-9 <= slice_mm <= high + 1e-9, site
            assert 55.0 <= slice_mm * image.shape[0] <= 100.0, site
            fov[site] = geometry.fov_mm
    assert fov["E"] < 100.0  # BIDMC: tight field of view around the gland
    assert min(fov["A"], fov["F"]) > 225.0  # wide enough for the femoral heads
    assert cases["C"][0].label.shape[0] > 2 * cases["A"][0].label.shape[0]  # 1.25 mm slices
    assert len({round(value) for value in fov.values()}) >= 4


@pytest.mark.parametrize("site", ["C", "E"])
def test_slab_and_field_of_view_do_not_depend_on_matrix_size(site: str) -> None:
    small, _ = make_case(site, 2, SIZE)
    large, _ = make_case(site, 2, 96)
    assert small.shape[0] == large.shape[0]
    assert small.spacing[0] == pytest.approx(large.spacing[0])
    assert small.spacing[1] * SIZE == pytest.approx(large.spacing[1] * 96)
    # Same physical slab: the first slice sits at the same height.
    assert small.affine[2, 3] == pytest.approx(large.affine[2, 3])


def test_gland_lies_inside_the_field_of_view_and_the_slab(
    cases: dict[str, list[ImagedCase]],
) -> None:
    for site, site_cases in cases.items():
        for case in site_cases:
            label = case.label
            slices = np.nonzero(label.any(axis=(1, 2)))[0]
            assert slices[0] >= 2, site
            assert slices[-1] <= label.shape[0] - 3, site
            margin = int(4.0 / case.geometry.spacing_mm)  # the planned margin is 6 mm
            rows = np.nonzero(label.any(axis=(0, 2)))[0]
            columns = np.nonzero(label.any(axis=(0, 1)))[0]
            assert min(rows[0], columns[0]) >= margin, site
            assert max(rows[-1], columns[-1]) < SIZE - margin, site


def test_gland_position_varies_between_cases(cases: dict[str, list[ImagedCase]]) -> None:
    centres = [_gland_centre_mm(case) for case in cases["A"]]
    fov_centres = [(case.geometry.fov_mm / 2,) * 2 for case in cases["A"]]
    offsets = [np.subtract(c, f) for c, f in zip(centres, fov_centres, strict=True)]
    assert max(np.hypot(*offset) for offset in offsets) > 2.0
    assert np.ptp([offset[1] for offset in offsets]) > 1.0


def test_vendors_store_their_own_intensity_scale(cases: dict[str, list[ImagedCase]]) -> None:
    fat_level = {}
    for site, site_cases in cases.items():
        case = site_cases[0]
        near_gland = (case.tissues == Tissue.FAT) & (np.abs(case.sensitivity - 1) < 0.2)
        fat_level[site] = float(np.median(case.image[near_gland]))
        if SITES[site].vendor_scale.stored_dtype == "int16":
            assert np.array_equal(case.image, np.round(case.image)), site
            assert case.image.max() <= SITES[site].vendor_scale.ceiling
    assert fat_level["E"] > 2 * max(fat_level[site] for site in "ACDF")  # GE scales up
    assert min(fat_level[site] for site in "ACDF") > 2 * fat_level["B"]  # Philips floats
    assert not np.array_equal(cases["B"][0].image, np.round(cases["B"][0].image))


def test_measured_snr_follows_the_protocol(cases: dict[str, list[ImagedCase]]) -> None:
    for site, site_cases in cases.items():
        case = site_cases[0]
        measured = _noise_snr(case, image_case(site, 0, SIZE, repeat=1))
        geometry = case.geometry
        expected = SITES[site].snr(geometry.field_t, geometry.slice_thickness_mm)
        assert measured == pytest.approx(expected, rel=0.2), site


def test_3t_gives_higher_snr_than_1_5t_with_the_same_protocol() -> None:
    by_field: dict[float, float] = {}
    for index in range(8):  # UCL scanned on both field strengths
        case = image_case("D", index, SIZE)
        if case.geometry.field_t not in by_field:
            repeated = image_case("D", index, SIZE, repeat=1)
            by_field[case.geometry.field_t] = _noise_snr(case, repeated)
    assert set(by_field) == {1.5, 3.0}
    assert by_field[3.0] > 1.5 * by_field[1.5]
    # The body-coil sites are the noisiest; 3 T surface coil the cleanest of the others.
    assert SITES["A"].snr(3.0, 3.8) > 2 * SITES["C"].snr(3.0, 1.25)


@pytest.mark.parametrize("site", ["B", "E", "F"])
def test_endorectal_balloon_is_a_dark_disc_in_a_bright_ring_behind_the_gland(
    cases: dict[str, list[ImagedCase]], site: str
) -> None:
    for case in cases[site]:
        balloon = np.isin(case.tissues, [Tissue.COIL_BALLOON, Tissue.BALLOON_MEMBRANE])
        disc = ndimage.binary_fill_holes(balloon, structure=np.ones((1, 3, 3)))
        spacing = case.geometry.spacing_mm
        outside_mm = ndimage.distance_transform_edt(~disc, sampling=(1e3, spacing, spacing))
        ring = (outside_mm > 2) & (outside_mm < 10)
        at_gland = _gland_slices(case)
        disc_mean = float(case.image[disc & at_gland].mean())
        ring_mean = float(case.image[ring & at_gland].mean())
        gland_mean = float(case.image[case.label > 0].mean())
        assert disc_mean < 0.15 * ring_mean
        assert ring_mean > 1.3 * gland_mean  # the gland is not the brightest thing here
        assert np.nonzero(disc)[1].mean() > np.nonzero(case.label)[1].mean()  # posterior
        fat = (case.tissues == Tissue.FAT) & at_gland
        near, far = fat & (outside_mm < 15), fat & (outside_mm > 45)
        assert np.median(case.image[near]) > 1.8 * np.median(case.image[far])


def test_surface_coil_brightens_towards_the_body_surface_and_body_coil_is_flat(
    cases: dict[str, list[ImagedCase]],
) -> None:
    def far_to_near_fat(case: ImagedCase) -> float:
        gland_row, gland_column = _gland_centre_mm(case)
        spacing = case.geometry.spacing_mm
        y = np.arange(SIZE)[None, :, None] * spacing - gland_row
        x = np.arange(SIZE)[None, None, :] * spacing - gland_column
        fat = (case.tissues == Tissue.FAT) & _gland_slices(case)
        near = fat & (np.abs(y) < 30) & (np.abs(x) < 50)
        far = fat & (np.abs(y) > 70)  # towards the anterior and posterior skin
        return float(np.median(case.image[far]) / np.median(case.image[near]))

    for case in cases["A"]:
        assert far_to_near_fat(case) > 1.15
    for site in "CD":
        for case in cases[site]:
            assert 0.85 < far_to_near_fat(case) < 1.12, site


@pytest.mark.parametrize("site", ["A", "C", "D"])
def test_gland_is_not_the_brightest_structure(
    cases: dict[str, list[ImagedCase]], site: str
) -> None:
    for case in cases[site]:
        gland = float(case.image[case.label > 0].mean())
        urine = case.tissues == Tissue.URINE
        assert urine.any()
        assert float(case.image[urine].mean()) > 1.5 * gland
        vesicles = float(case.image[case.tissues == Tissue.SEMINAL_VESICLE].mean())
        assert vesicles > 1.2 * gland  # a bright confuser next to the base


@pytest.mark.parametrize("site", list(SITES))
def test_peripheral_zone_is_brighter_than_central_gland(
    cases: dict[str, list[ImagedCase]], site: str
) -> None:
    for case in cases[site]:
        peripheral = float(case.image[case.tissues == Tissue.PERIPHERAL_ZONE].mean())
        central = float(case.image[case.tissues == Tissue.CENTRAL_GLAND].mean())
        assert peripheral > 1.25 * central


def test_generate_phantom_writes_the_saml_layout(tmp_path: Path) -> None:
    out = generate_phantom(tmp_path / "phantom", cases_per_site=2, size=48, sites="AB")
    names = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert names == [
        "A/Case00.nii.gz",
        "A/Case00_segmentation.nii.gz",
        "A/Case01.nii.gz",
        "A/Case01_segmentation.nii.gz",
        "B/Case00.nii.gz",
        "B/Case00_segmentation.nii.gz",
        "B/Case01.nii.gz",
        "B/Case01_segmentation.nii.gz",
        "phantom.json",
    ]
    for site, dtype in (("A", np.int16), ("B", np.float32)):
        image = nib.load(out / site / "Case01.nii.gz")
        label = nib.load(out / site / "Case01_segmentation.nii.gz")
        assert image.get_data_dtype() == dtype
        assert label.get_data_dtype() == np.uint8
        assert np.allclose(image.affine, label.affine)
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        expected_image, expected_label = make_case(site, 1, 48)
        assert np.allclose(image.affine, expected_image.affine, atol=1e-5)
        assert np.allclose(np.asarray(image.dataobj), expected_image.file_order_array)
        assert np.array_equal(np.asarray(label.dataobj), expected_label.file_order_array)
    manifest = json.loads((out / "phantom.json").read_text())
    assert manifest["parameters"] == {
        "format_version": 1,
        "cases_per_site": 2,
        "size": 48,
        "seed": 0,
        "sites": ["A", "B"],
    }
    assert manifest["sites"]["B"]["coil"] == "endorectal"
    assert [case["case"] for case in manifest["cases"]["A"]] == ["Case00", "Case01"]


def test_generate_phantom_is_idempotent_and_refuses_other_parameters(tmp_path: Path) -> None:
    out = tmp_path / "phantom"
    generate_phantom(out, cases_per_site=1, size=40, sites="E")
    written = out / "E" / "Case00.nii.gz"
    os.utime(written, (1_000_000, 1_000_000))
    assert generate_phantom(out, cases_per_site=1, size=40, sites="E") == out
    assert written.stat().st_mtime == 1_000_000  # nothing was rewritten
    with pytest.raises(DatasetError, match="cases_per_site 1 != 2"):
        generate_phantom(out, cases_per_site=2, size=40, sites="E")
    with pytest.raises(DatasetError, match="seed"):
        generate_phantom(out, cases_per_site=1, size=40, seed=5, sites="E")
    generate_phantom(out, cases_per_site=2, size=40, sites="E", overwrite=True)
    assert (out / "E" / "Case01_segmentation.nii.gz").is_file()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a phantom"):
        generate_phantom(foreign, cases_per_site=1, size=40, sites="E")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_more_cases_leave_earlier_cases_unchanged(tmp_path: Path) -> None:
    one = generate_phantom(tmp_path / "one", cases_per_site=1, size=40, sites="F")
    two = generate_phantom(tmp_path / "two", cases_per_site=2, size=40, sites="F")
    for name in ("Case00.nii.gz", "Case00_segmentation.nii.gz"):
        first = nib.load(one / "F" / name)
        second = nib.load(two / "F" / name)
        assert np.array_equal(np.asarray(first.dataobj), np.asarray(second.dataobj))
        assert np.array_equal(first.affine, second.affine)


def test_interrupted_generation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_make_case = generate_module.make_case

    def failing_make_case(
        site: str, case_index: int, size: int, seed: int
    ) -> tuple[Volume, Volume]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
        return real_make_case(site, case_index, size, seed)

    monkeypatch.setattr(generate_module, "make_case", failing_make_case)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom(tmp_path / "phantom", cases_per_site=2, size=40, sites="D")
    assert list(tmp_path.iterdir()) == []


def test_bad_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown site"):
        make_case("G", 0, SIZE)
    with pytest.raises(ValueError, match="size"):
        make_case("A", 0, 8)
    with pytest.raises(ValueError, match="repeat"):
        generate_phantom(tmp_path / "p", cases_per_site=1, size=40, sites="AA")
    with pytest.raises(ValueError, match="cases_per_site"):
        generate_phantom(tmp_path / "p", cases_per_site=0, size=40)
