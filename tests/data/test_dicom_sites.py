"""Sites of DICOM series folders: discovered as unlabelled cases, prepared through the cache
with a key on the series' content."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import Case, discover
from napari_kdseg.data.layout import is_dicom_series_folder
from napari_kdseg.data.preprocess import PreprocessConfig

CONFIG = PreprocessConfig(size=32, context=3)
# ../shared/data/real beside the project root, as tests/conftest.py finds it
REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


def _real(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"real MRI not available: {path} is missing (it lives in ../shared/data)")
    return path


def test_real_root_finds_both_dicom_sites_beside_the_nifti_one() -> None:
    dataset = discover(_real(""))
    assert dataset.site_names == ["promise12_case00", "prostate3t_dicom", "prostatex_t2"]
    assert dataset.site("promise12_case00").layout == "saml"

    prostate3t = dataset.site("prostate3t_dicom")
    assert prostate3t.layout == "dicom"
    assert [c.id for c in prostate3t.cases] == ["Prostate3T-03-0001", "Prostate3T-03-0002"]
    assert all(c.label is None and c.image.is_dir() for c in prostate3t.cases)

    # patient folders holding series folders: one case per series, named patient/series
    prostatex = dataset.site("prostatex_t2")
    assert prostatex.layout == "dicom"
    assert [c.id for c in prostatex.cases] == [
        "ProstateX-0000/4.000000-t2tsetra-00702",
        "ProstateX-0001/10.000000-t2tsetra-17541",
        "ProstateX-0001/6.000000-t2tsetra-76610",
        "ProstateX-0218/5.000000-t2tsetra320p2-09906",
    ]
    assert all(c.image.parent.parent == prostatex.path for c in prostatex.cases)

    # unlabelled cases are listed only when asked, and announced once per site
    assert dataset.cases(["prostate3t_dicom"]) == []
    assert len(dataset.cases(["prostate3t_dicom", "prostatex_t2"], labelled=False)) == 6
    warnings = [p for p in dataset.problems if p.site in ("prostate3t_dicom", "prostatex_t2")]
    assert [p.severity for p in warnings] == ["warning", "warning"]
    assert "DICOM series without masks" in warnings[0].problem
    assert "not to train a model alone" in warnings[0].problem


def test_a_dicom_site_folder_alone_is_a_dataset_of_one_site() -> None:
    dataset = discover(_real("prostate3t_dicom"))
    assert dataset.site_names == ["prostate3t_dicom"]
    assert len(dataset.site("prostate3t_dicom").cases) == 2


def test_a_folder_of_patient_folders_alone_is_read_as_a_dataset_of_sites() -> None:
    """Names cannot tell a site of patients from a dataset of sites of series; a root is read
    as the latter (the datasets module says so)."""
    dataset = discover(_real("prostatex_t2"))
    assert dataset.site_names == ["ProstateX-0000", "ProstateX-0001", "ProstateX-0218"]
    assert [c.id for c in dataset.site("ProstateX-0001").cases] == [
        "10.000000-t2tsetra-17541",
        "6.000000-t2tsetra-76610",
    ]


def test_a_single_series_folder_is_not_a_site() -> None:
    series = _real("prostate3t_dicom") / "Prostate3T-03-0001"
    assert is_dicom_series_folder(series)
    assert not is_dicom_series_folder(series.parent)
    with pytest.raises(DatasetError, match="DICOM series folders"):
        discover(series)


def test_folders_without_dicom_files_are_no_dicom_site(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "site" / name).mkdir(parents=True)
        (tmp_path / "site" / name / "notes.txt").write_text("not DICOM")
    assert not is_dicom_series_folder(tmp_path / "site" / "a")
    with pytest.raises(DatasetError, match="no sites found"):
        discover(tmp_path / "site")


def _copy_series(tmp_path: Path) -> Case:
    source = _real("prostate3t_dicom") / "Prostate3T-03-0001"
    folder = tmp_path / "site" / source.name
    shutil.copytree(source, folder)
    return Case("site", source.name, folder, None)


def test_a_dicom_series_is_prepared_and_keyed_on_its_files_content(tmp_path: Path) -> None:
    case = _copy_series(tmp_path)
    cache = PreprocessCache(tmp_path / "cache")
    prepared = cache.prepare(case, CONFIG)
    assert prepared.label is None
    assert prepared.image.shape == (19, 32, 32)
    assert np.isfinite(prepared.image).all()
    assert (cache.hits, cache.misses) == (0, 1)

    again = PreprocessCache(tmp_path / "cache").prepare(case, CONFIG)
    np.testing.assert_array_equal(again.image, prepared.image)

    key = cache.key(case, CONFIG)
    files = sorted(case.image.iterdir())
    # renaming a slice file changes nothing the reader sees (it orders slices by position)
    files[0].rename(case.image / "renamed.dcm")
    assert cache.key(case, CONFIG) == key
    # one changed byte in one file, or one file fewer, is another series
    victim = files[3]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    changed = cache.key(case, CONFIG)
    assert changed != key
    victim.unlink()
    assert cache.key(case, CONFIG) not in (key, changed)


def test_kdseg_info_reads_dicom_series_geometry_in_aligned_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kdseg info`` on the real root: each DICOM site's shapes and spacings, no error for
    its series folders, and every column starting at the same place on every row."""
    from napari_kdseg.cli import main

    monkeypatch.setenv("COLUMNS", "160")  # a wide terminal: no row wraps

    assert main(["info", str(_real(""))]) == 0
    out = capsys.readouterr().out
    assert "unsupported file type" not in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("pro",))}
    assert "19-21 x 384 x 384" in rows["prostate3t_dicom"]
    assert "3, 0.5, 0.5" in rows["prostate3t_dicom"]
    assert "none" in rows["prostatex_t2"]
    header = next(line for line in out.splitlines() if line.startswith("site "))
    first_words = {
        "layout": ("saml", "dicom", "dicom"),
        "slices x rows x cols": ("64 x", "19-21", "19-20"),
        "spacing mm": ("1.62", "3, 0.5", "3-3.6"),
    }
    sites = ("promise12_case00", "prostate3t_dicom", "prostatex_t2")
    for column, words in first_words.items():
        pairs = zip(sites, words, strict=True)
        starts = {rows[site].index(word, len(site)) for site, word in pairs}
        assert starts == {header.index(column)}, column
