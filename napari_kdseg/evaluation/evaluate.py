"""Score a trained model (teacher or student) case by case on chosen sites, SAML's way:
every slice predicted, mapped back to the source grid, largest connected component kept,
Dice / HD95 / ASD in 3D against the mask as stored."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from napari_kdseg.core.errors import DataWarning
from napari_kdseg.data.cache import PreprocessCache
from napari_kdseg.data.datasets import Case, Dataset
from napari_kdseg.data.io import read_volume
from napari_kdseg.evaluation.metrics import SegmentationScores, score, summarise
from napari_kdseg.inference.model import SegmentationModel
from napari_kdseg.inference.segment import segment_prepared

METRICS = ("dice", "hd95", "asd")


@dataclass(frozen=True)
class CaseResult:
    site: str
    case: str
    scores: SegmentationScores
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "case": self.case,
            **self.scores.to_json(),
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Evaluation:
    """Per-case results and per-site summaries (mean, std, n, undefined) of each metric."""

    model: str
    cases: list[CaseResult]

    @property
    def sites(self) -> list[str]:
        return sorted({result.site for result in self.cases})

    def site_summary(self, site: str) -> dict[str, dict[str, float | int | None]]:
        rows = [r for r in self.cases if r.site == site]
        return {m: summarise([getattr(r.scores, m) for r in rows]) for m in METRICS}

    def overall(self) -> dict[str, dict[str, float | int | None]]:
        return {m: summarise([getattr(r.scores, m) for r in self.cases]) for m in METRICS}

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cases": [r.to_json() for r in self.cases],
            "sites": {site: self.site_summary(site) for site in self.sites},
            "overall": self.overall(),
        }


def evaluate_cases(
    model: SegmentationModel,
    cases: Iterable[Case],
    cache: PreprocessCache | None = None,
    tta: bool = False,
    on_case: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Segment and score each labelled case; ``on_case`` sees each result as it comes.

    A case whose mask holds no prostate is left out with a :class:`DataWarning`: Dice, HD95
    and ASD are undefined against an empty truth, and an empty mask is more often a failed
    export than a scan without a gland.
    """
    cache = cache or PreprocessCache()
    results = []
    for case in cases:
        if case.label is None:
            continue
        started = time.perf_counter()
        truth = read_volume(case.label, labels=True)
        if not truth.array.any():
            warnings.warn(
                DataWarning(
                    f"{case.label}: the mask holds no prostate; {case.site}/{case.id} is left "
                    "out of the scores (Dice, HD95 and ASD need a gland to compare with)"
                ),
                stacklevel=2,
            )
            continue
        prepared = cache.prepare(case, model.preprocess)
        prediction = segment_prepared(prepared.image, prepared.geometry, model, tta=tta)
        scores = score(prediction.labels, truth.array, truth.spacing)
        result = CaseResult(case.site, case.id, scores, time.perf_counter() - started)
        if on_case is not None:
            on_case(result)
        results.append(result)
    return results


def evaluate_model(
    model: SegmentationModel,
    dataset: Dataset,
    sites: list[str] | None = None,
    cache: PreprocessCache | None = None,
    tta: bool = False,
    on_case: Callable[[CaseResult], None] | None = None,
) -> Evaluation:
    """Per-case and per-site metrics of ``model`` on ``sites`` of ``dataset`` (default all)."""
    cases = dataset.cases(sites)
    return Evaluation(str(model.path), evaluate_cases(model, cases, cache, tta, on_case))


__all__ = ["CaseResult", "Evaluation", "evaluate_cases", "evaluate_model"]
