"""Site and case discovery in the layouts users have, and the survey behind ``kdseg info``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.datasets import discover, split_cases
from napari_kdseg.data.survey import survey_dataset

SHAPE = (12, 10, 4)  # file order (i, j, k)


def _nifti(
    path: Path, data: np.ndarray, spacing: tuple[float, float, float] = (0.5, 0.5, 3.0)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), path)
    return path


def _case(
    folder: Path,
    name: str,
    label_suffix: str = "_segmentation",
    spacing: tuple[float, float, float] = (0.5, 0.5, 3.0),
) -> None:
    rng = np.random.default_rng(len(name))
    _nifti(folder / f"{name}.nii.gz", rng.random(SHAPE).astype(np.float32), spacing)
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:7, 3:7, 1:3] = 1
    _nifti(folder / f"{name}{label_suffix}.nii.gz", mask, spacing)


def test_saml_layout_multi_site(tmp_path: Path) -> None:
    for site in ("RUNMC", "BMC"):
        for number in range(3):
            _case(
                tmp_path / site,
                f"Case{number:02d}",
                "_Segmentation" if site == "BMC" else "_segmentation",
            )
    dataset = discover(tmp_path)
    assert dataset.site_names == ["BMC", "RUNMC"]
    assert all(site.layout == "saml" for site in dataset.sites)
    assert [c.id for c in dataset.site("RUNMC").cases] == ["Case00", "Case01", "Case02"]
    assert dataset.site("BMC").cases[0].label.name == "Case00_Segmentation.nii.gz"  # type: ignore[union-attr]
    assert not dataset.problems
    assert len(dataset.cases()) == 6
    assert len(dataset.cases(["BMC"])) == 3
    with pytest.raises(DatasetError, match="no site named 'X'"):
        dataset.site("X")


def test_single_site_folder_is_a_dataset_of_one_site(tmp_path: Path) -> None:
    _case(tmp_path / "HK", "Case00")
    dataset = discover(tmp_path / "HK")
    assert dataset.site_names == ["HK"]
    assert dataset.sites[0].path == tmp_path / "HK"


def test_promise12_layout(tmp_path: Path) -> None:
    site = tmp_path / "UCL"
    site.mkdir()
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((4, 10, 12)).astype(np.float32))
    mask = sitk.GetImageFromArray(np.ones((4, 10, 12), np.uint8))
    for item in (image, mask):
        item.SetSpacing((0.6, 0.6, 3.6))
    sitk.WriteImage(image, str(site / "Case00.mhd"))
    sitk.WriteImage(mask, str(site / "Case00_segmentation.mhd"))
    dataset = discover(tmp_path)
    assert dataset.sites[0].layout == "promise12"
    (case,) = dataset.sites[0].cases
    assert (case.image.name, case.label.name) == ("Case00.mhd", "Case00_segmentation.mhd")  # type: ignore[union-attr]
    survey = survey_dataset(dataset)
    assert survey.sites[0].cases[0].shape == [4, 10, 12]
    assert survey.sites[0].cases[0].spacing == pytest.approx([3.6, 0.6, 0.6])


def test_msd_and_nnunet_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    msd = tmp_path / "Task05_Prostate"
    _nifti(msd / "imagesTr" / "prostate_00.nii.gz", rng.random(SHAPE).astype(np.float32))
    _nifti(msd / "labelsTr" / "prostate_00.nii.gz", np.ones(SHAPE, np.uint8))
    nnunet = tmp_path / "Dataset001_Prostate"
    for channel in ("0000", "0001"):
        _nifti(
            nnunet / "imagesTr" / f"prostate_01_{channel}.nii.gz",
            rng.random(SHAPE).astype(np.float32),
        )
    _nifti(nnunet / "labelsTr" / "prostate_01.nii.gz", np.ones(SHAPE, np.uint8))
    dataset = discover(tmp_path)
    assert {s.layout for s in dataset.sites} == {"msd"}
    (nn_case,) = dataset.site("Dataset001_Prostate").cases
    assert nn_case.id == "prostate_01"
    assert nn_case.image.name == "prostate_01_0000.nii.gz"
    assert dataset.site("Task05_Prostate").cases[0].label is not None


def test_problems_are_found_and_named(tmp_path: Path) -> None:
    site = tmp_path / "A"
    _case(site, "Case00")
    _nifti(site / "Case01.nii.gz", np.zeros(SHAPE, np.float32))  # no mask
    _nifti(site / "Case02_segmentation.nii.gz", np.zeros(SHAPE, np.uint8))  # no image
    _nifti(site / "Case03.nii.gz", np.ones(SHAPE, np.float32))
    _nifti(site / "Case03_segmentation.nii.gz", np.ones((12, 10, 5), np.uint8))  # shape mismatch
    _nifti(site / "Case04.nii.gz", np.ones(SHAPE, np.float32))
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:4, 2:4, 1] = 1
    labels[5:7, 5:7, 2] = 2  # zones labelled separately
    _nifti(site / "Case04_segmentation.nii.gz", labels)
    (site / "Case05.nii.gz").write_bytes(b"not gzip at all")
    _nifti(site / "Case05_segmentation.nii.gz", np.ones(SHAPE, np.uint8))
    _nifti(site / "Case06.nii.gz", np.ones(SHAPE, np.float32))
    _nifti(site / "Case06_segmentation.nii.gz", np.zeros(SHAPE, np.uint8))  # empty mask
    (tmp_path / "notes").mkdir()  # a stray folder is a warning, not a site

    dataset = discover(tmp_path)
    survey = survey_dataset(dataset)
    by_case = {(p.case, p.problem.split(":")[0].split(" (")[0]) for p in survey.problems if p.case}
    assert ("Case01", "image without mask") in by_case
    assert ("Case02", "mask without image") in by_case
    assert any(
        p.case == "Case03" and "shape (5, 10, 12) vs (4, 10, 12)" in p.problem
        for p in survey.problems
    )
    assert any(case == "Case04" and "non-binary labels [0, 1, 2]" in text for case, text in by_case)
    assert any(case == "Case05" and "not a readable NIfTI" in text for case, text in by_case)
    assert any(case == "Case06" and "empty" in text for case, text in by_case)
    assert any(p.site == "notes" and p.severity == "warning" for p in survey.problems)
    errors = {p.case for p in survey.errors}
    assert errors == {"Case01", "Case02", "Case03", "Case05"}
    for problem in survey.problems:
        assert Path(problem.path).name in str(problem)


def test_survey_json_shape(tmp_path: Path) -> None:
    _case(tmp_path / "A", "Case00", spacing=(0.6, 0.6, 3.6))
    _case(tmp_path / "B", "Case00", spacing=(0.4, 0.4, 3.0))
    document = survey_dataset(discover(tmp_path)).to_json()
    assert [s["name"] for s in document["sites"]] == ["A", "B"]
    case = document["sites"][1]["cases"][0]
    assert set(case) >= {"id", "image", "label", "shape", "spacing"}
    assert case["shape"] == [4, 10, 12]
    assert case["spacing"] == pytest.approx([3.0, 0.4, 0.4])
    assert case["label_values"] == [0, 1]
    assert document["problems"] == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "absent", "does not exist"),
        (lambda root: (root / "file.txt").write_text("x") and root / "file.txt", "found a file"),
        (lambda root: root, "folder is empty"),
        (lambda root: (root / "notes.txt").write_text("x") and root, "no sites found"),
    ],
)
def test_unusable_roots(tmp_path: Path, make: object, message: str) -> None:
    root = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=message) as caught:
        discover(root)
    assert str(root) in str(caught.value)


def test_split_cases_is_deterministic(tmp_path: Path) -> None:
    for number in range(10):
        _case(tmp_path / "A", f"Case{number:02d}")
    cases = discover(tmp_path).cases()
    kept, held = split_cases(cases, 0.2, seed=3)
    assert len(held) == 2
    assert len(kept) == 8
    assert not set(kept) & set(held)
    assert split_cases(cases, 0.2, seed=3) == (kept, held)
    assert split_cases(cases, 0.2, seed=4) != (kept, held)
