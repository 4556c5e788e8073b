"""Find sites and cases under a dataset root, in the layouts multi-site prostate data ships in.

Layouts recognised in a site folder:

- ``saml``: ``Case00.nii.gz`` with ``Case00_segmentation.nii.gz`` (or ``_Segmentation``), the
  SAML / MS-Net multi-site release;
- ``promise12``: ``Case00.mhd`` with ``Case00_segmentation.mhd`` (the ``.raw`` files beside them);
- ``msd``: ``imagesTr/`` and ``labelsTr/`` as in the Medical Segmentation Decathlon and
  nnU-Net v2 (``case_0000.nii.gz`` channel files; channel 0000 is used);
- ``dicom``: sub-folders that are DICOM series, one case per series folder, as scans leave a
  PACS; or patient folders holding series folders, one case per series named
  ``patient/series``. DICOM cases have no mask (``label=None``): they can teach a student
  through the distillation terms, not train a model alone.

A root whose sub-folders are sites is a multi-site dataset; a site folder dropped alone is a
dataset of one site. The two readings of a folder of folders of series (a site of patients,
or a dataset of sites of series) cannot be told apart by names; a root is read as a dataset
of sites there, and each site may hold patient folders. So ``real/prostatex_t2`` found under
``real/`` is one site with cases ``ProstateX-0000/4.000000-t2tsetra-00702`` and so on, while
``prostatex_t2`` dropped alone is a dataset with a site per patient folder.

Discovery only looks at names and a few files' first bytes (:mod:`napari_kdseg.data.layout`
knows them); :mod:`napari_kdseg.data.survey` opens files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.layout import (
    MSD_IMAGES,
    MSD_LABELS,
    case_stem,
    is_dicom_series_folder,
    is_metaimage,
    is_volume_file,
    mask_case,
    msd_image_case,
)


@dataclass(frozen=True)
class Case:
    """One scan and (when present) its whole-gland mask."""

    site: str
    id: str
    image: Path
    label: Path | None


@dataclass(frozen=True)
class Site:
    """One acquisition site (scanner, institution): a folder of cases."""

    name: str
    path: Path
    layout: str
    cases: tuple[Case, ...]


@dataclass(frozen=True)
class Problem:
    """Something wrong with a file or folder; ``error`` ones make a case unusable."""

    path: str
    problem: str
    severity: str = "error"
    site: str | None = None
    case: str | None = None

    def __str__(self) -> str:
        where = "/".join(part for part in (self.site, self.case) if part)
        prefix = f"[{self.severity}] {where}: " if where else f"[{self.severity}] "
        return f"{prefix}{self.path}: {self.problem}"


@dataclass(frozen=True)
class Dataset:
    """Sites found under ``root`` and the naming problems met on the way."""

    root: Path
    sites: tuple[Site, ...]
    problems: tuple[Problem, ...] = ()

    @property
    def site_names(self) -> list[str]:
        return [site.name for site in self.sites]

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise DatasetError(self.root, f"no site named {name!r}; sites are {self.site_names}")

    def cases(self, sites: Iterable[str] | None = None, *, labelled: bool = True) -> list[Case]:
        """Cases of the chosen sites (all by default); ``labelled`` drops those without a mask."""
        chosen = self.sites if sites is None else [self.site(name) for name in sites]
        return [c for s in chosen for c in s.cases if c.label is not None or not labelled]


def discover(root: str | Path) -> Dataset:
    """Find the sites and cases under ``root`` (a dataset root or a single site folder)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(root, "folder does not exist")
    if not root.is_dir():
        raise DatasetError(root, "expected a folder of sites or of cases, found a file")
    if not _entries(root):
        raise DatasetError(
            root,
            "folder is empty: expected sub-folders of cases (one per site) or the cases "
            "of one site (CaseXX.nii.gz with CaseXX_segmentation.nii.gz, .mhd pairs, "
            "imagesTr/ with labelsTr/, or DICOM series folders)",
        )
    problems: list[Problem] = []
    # Patient folders are not looked for here: a folder of folders of series at the root is
    # read as a dataset of sites (module docstring).
    own = _scan_site(root, root.name, problems, patient_folders=False)
    if own is not None:
        return Dataset(root=root, sites=(own,), problems=tuple(problems))
    sites = []
    for folder in _subfolders(root):
        try:
            site = _scan_site(folder, folder.name, problems)
        except DatasetError as error:
            problems.append(Problem(error.path, error.problem, site=folder.name))
            continue
        if site is None:
            problems.append(
                Problem(
                    str(folder),
                    "no cases found (expected CaseXX.nii.gz + "
                    "CaseXX_segmentation.nii.gz, .mhd pairs, imagesTr/labelsTr or "
                    "folders of DICOM series)",
                    severity="warning",
                    site=folder.name,
                )
            )
        else:
            sites.append(site)
    if not sites:
        raise DatasetError(
            root,
            f"no sites found among {_contents(root)}: expected sub-folders of cases "
            "(CaseXX.nii.gz with CaseXX_segmentation.nii.gz, CaseXX.mhd with "
            "CaseXX_segmentation.mhd, imagesTr/ with labelsTr/, or DICOM series folders), or "
            "such cases directly in this folder",
        )
    return Dataset(root=root, sites=tuple(sites), problems=tuple(problems))


def with_unlabelled(dataset: Dataset, folders: Sequence[str | Path]) -> tuple[Dataset, list[str]]:
    """``dataset`` with the sites found in each of ``folders`` added as unlabelled sites (their
    masks, if any, are not used), and the names of the sites added.

    A distillation can learn from scans without masks held in a folder apart from the
    labelled dataset (a folder of DICOM series, say). A site name met twice is refused: site
    names key the cases, the caches' messages and the model card.
    """
    sites = list(dataset.sites)
    problems = list(dataset.problems)
    added: list[str] = []
    for folder in folders:
        found = discover(folder)
        for site in found.sites:
            taken = next((other for other in sites if other.name == site.name), None)
            if taken is not None:
                raise DatasetError(
                    site.path,
                    f"site name {site.name!r} is also the name of {taken.path}; rename one "
                    "of the two folders",
                )
            cases = tuple(dataclasses.replace(case, label=None) for case in site.cases)
            sites.append(dataclasses.replace(site, cases=cases))
            added.append(site.name)
        problems += [p for p in found.problems if p.severity == "error"]
    merged = Dataset(root=dataset.root, sites=tuple(sites), problems=tuple(problems))
    return merged, added


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, or a :class:`DatasetError` saying why it cannot be listed."""
    try:
        return list(folder.iterdir())
    except OSError as error:
        raise DatasetError(folder, f"folder cannot be read ({error.strerror or error})") from error


def _contents(folder: Path) -> str:
    """``'2 file(s) (notes.txt, scan.png) and 1 folder(s) (empty)'``, for messages."""
    entries = sorted(p for p in _entries(folder) if not p.name.startswith("."))
    parts = []
    for kind, chosen in (
        ("file(s)", [p for p in entries if not p.is_dir()]),
        ("folder(s)", [p for p in entries if p.is_dir()]),
    ):
        if chosen:
            names = ", ".join(p.name for p in chosen[:3]) + (", ..." if len(chosen) > 3 else "")
            parts.append(f"{len(chosen)} {kind} ({names})")
    return " and ".join(parts) or "hidden files only"


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in _entries(folder) if p.is_dir() and not p.name.startswith("."))


def _scan_site(
    folder: Path, name: str, problems: list[Problem], *, patient_folders: bool = True
) -> Site | None:
    if (folder / MSD_IMAGES).is_dir():
        return _scan_msd(folder, name, problems)
    files = [
        p
        for p in _entries(folder)
        if p.is_file() and not p.name.startswith(".") and is_volume_file(p)
    ]
    if not files:
        return _scan_dicom(folder, name, problems, patient_folders)
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for path in sorted(files):
        owner = mask_case(path)
        target = images if owner is None else labels
        case_id = owner or case_stem(path)
        assert case_id is not None
        if case_id in target:
            problems.append(
                Problem(
                    str(path),
                    f"second file for case {case_id} (also {target[case_id].name}); ignored",
                    site=name,
                    case=case_id,
                )
            )
            continue
        target[case_id] = path
    layout = "promise12" if any(is_metaimage(p) for p in files) else "saml"
    return _pair(folder, name, layout, images, labels, problems)


def _scan_msd(folder: Path, name: str, problems: list[Problem]) -> Site:
    images: dict[str, Path] = {}
    for path in sorted(_entries(folder / MSD_IMAGES)):
        case_id = msd_image_case(path)
        if case_id is not None and not path.name.startswith("."):
            images[case_id] = path
    labels: dict[str, Path] = {}
    label_folder = folder / MSD_LABELS
    if label_folder.is_dir():
        for path in sorted(_entries(label_folder)):
            stem = case_stem(path)
            if stem is not None and not path.name.startswith("."):
                labels[stem] = path
    else:
        problems.append(Problem(str(label_folder), "missing: no masks for this site", site=name))
    return _pair(folder, name, "msd", images, labels, problems)


def _scan_dicom(
    folder: Path, name: str, problems: list[Problem], patient_folders: bool
) -> Site | None:
    """A site of DICOM series folders (cases named after them), or of patient folders
    holding series folders (cases named ``patient/series``); None when there are none."""
    cases = []
    for child in _subfolders(folder):
        if is_dicom_series_folder(child):
            cases.append(Case(site=name, id=child.name, image=child, label=None))
        elif patient_folders:
            try:
                series = [s for s in _subfolders(child) if is_dicom_series_folder(s)]
            except DatasetError as error:
                problems.append(Problem(error.path, error.problem, site=name, case=child.name))
                continue
            cases += [
                Case(site=name, id=f"{child.name}/{s.name}", image=s, label=None) for s in series
            ]
    if not cases:
        return None
    problems.append(
        Problem(
            str(folder),
            f"{len(cases)} DICOM series without masks: unlabelled cases, usable to distil a "
            "student (through the distillation terms) but not to train a model alone",
            severity="warning",
            site=name,
        )
    )
    return Site(name=name, path=folder, layout="dicom", cases=tuple(cases))


def _pair(
    folder: Path,
    name: str,
    layout: str,
    images: dict[str, Path],
    labels: dict[str, Path],
    problems: list[Problem],
) -> Site:
    cases = []
    for case_id in sorted(images):
        label = labels.get(case_id)
        if label is None:
            problems.append(
                Problem(str(images[case_id]), "image without mask", site=name, case=case_id)
            )
        cases.append(Case(site=name, id=case_id, image=images[case_id], label=label))
    for case_id in sorted(set(labels) - set(images)):
        problems.append(
            Problem(str(labels[case_id]), "mask without image", site=name, case=case_id)
        )
    return Site(name=name, path=folder, layout=layout, cases=tuple(cases))


def split_cases(cases: Sequence[Case], fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Deterministic split of ``cases`` into (kept, held out) with ``fraction`` held out."""
    order = np.random.default_rng(seed).permutation(len(cases))
    held = max(1, round(fraction * len(cases))) if fraction > 0 and len(cases) > 1 else 0
    held_idx = set(order[:held].tolist())
    kept = [c for i, c in enumerate(cases) if i not in held_idx]
    return kept, [c for i, c in enumerate(cases) if i in held_idx]
