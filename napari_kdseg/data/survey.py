"""Open every case of a dataset and report shapes, spacings, label values and problems.

This is what ``kdseg info`` prints and what the napari panel shows before training: a user
should see a broken case before a training run trips over it hours later.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.data.datasets import Case, Dataset, Problem
from napari_kdseg.data.io import read_header, read_volume
from napari_kdseg.data.memory import check_fits_in_memory
from napari_kdseg.data.volume import check_mask_grid, volume_shape_message

# Image and mask voxel grids may disagree by rounding in their headers, not by more.
_AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class CaseSurvey:
    """What one case's files hold; ``shape``/``spacing`` in array order (slice, row, column)."""

    id: str
    image: str
    label: str | None
    shape: list[int] | None
    spacing: list[float] | None
    label_values: list[int] | None
    gland_voxels: int | None


@dataclass(frozen=True)
class SiteSurvey:
    name: str
    path: str
    layout: str
    cases: list[CaseSurvey]


@dataclass(frozen=True)
class DatasetSurvey:
    root: str
    sites: list[SiteSurvey]
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``kdseg info --json`` document."""
        return asdict(self)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def survey_dataset(dataset: Dataset, workers: int = 4, full: bool = False) -> DatasetSurvey:
    """Read headers and masks of every case (in a small thread pool: decoding is I/O bound).

    Scans are read by header only unless ``full``: then every voxel is read too, which finds
    NaN/Inf voxels and damage inside compressed data (a gzip CRC) before training does.
    """
    problems = list(dataset.problems)
    sites = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for site in dataset.sites:
            results = list(pool.map(partial(_survey_case, full=full), site.cases))
            sites.append(
                SiteSurvey(site.name, str(site.path), site.layout, [r[0] for r in results])
            )
            for _, case_problems in results:
                problems.extend(case_problems)
    return DatasetSurvey(root=str(dataset.root), sites=sites, problems=problems)


def _survey_case(case: Case, full: bool) -> tuple[CaseSurvey, list[Problem]]:
    problems: list[Problem] = []

    def problem(path: Path, text: str, severity: str = "error") -> None:
        problems.append(Problem(str(path), text, severity=severity, site=case.site, case=case.id))

    shape = spacing = values = None
    gland = None
    image_affine = None
    try:
        header = read_header(case.image)
        shape, spacing = list(header.shape), list(header.spacing)
        if len(header.shape) != 3:
            problem(case.image, volume_shape_message(header.shape))
        else:
            image_affine = header.affine
            check_fits_in_memory(case.image, header.shape, header.itemsize, "scan")
            if full:
                read_volume(case.image)
    except KdsegDataError as error:
        problem(case.image, error.problem)
    if case.label is not None:
        try:
            mask = read_volume(case.label, labels=True)
            values = [int(v) for v in np.unique(mask.array)]
            gland = int(np.count_nonzero(mask.array))
            if image_affine is not None and shape is not None:
                check_mask_grid(
                    case.label,
                    mask.shape,
                    mask.affine,
                    case.image,
                    tuple(shape),
                    image_affine,
                    atol=_AFFINE_TOLERANCE_MM,
                )
            if gland == 0:
                problem(
                    case.label,
                    "mask is empty (no prostate voxels); training skips this case",
                    severity="warning",
                )
            elif any(v not in (0, 1) for v in values):
                problem(
                    case.label,
                    f"non-binary labels {values}: every label > 0 will count as prostate",
                    severity="warning",
                )
        except KdsegDataError as error:
            problem(case.label, error.problem)
    survey = CaseSurvey(
        id=case.id,
        image=str(case.image),
        label=None if case.label is None else str(case.label),
        shape=shape,
        spacing=None if spacing is None else [round(s, 4) for s in spacing],
        label_values=values,
        gland_voxels=gland,
    )
    return survey, problems
