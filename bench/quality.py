"""Is the quality flag calibrated? Fit it on training-site validation cases, score unseen sites.

For every finished cell of a leave-one-site-out grid (``<runs>/<target>/seed<N>/<student>/``,
both students), the model's training sites are split as training split them
(``split_cases`` with the card's ``validation_fraction`` and ``seed``):

1. the training statistics are computed from the training sites' kept cases with the same
   function the card writer uses (these cards predate the section);
2. every held-out (validation) case of a training site is segmented and measured: these
   fit the risk score (a logistic regression of "Dice below 0.7") and the verdict thresholds;
3. every case of the unseen target site is segmented and judged with that calibration: the
   AUC of the risk for "Dice below 0.7", and the failures each verdict lets through.

Then the real labelled scan (PROMISE12 Case00) is segmented by every student, and one student
exported to ONNX times ``segment`` with and without the report.

    nice -n 19 .venv/bin/python bench/quality.py --write-calibration

Nothing under ``--runs`` or ``--dataset`` is written: the preprocessing cache lives in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from napari_kdseg.card import ModelCard
from napari_kdseg.data.cache import PreparedCase, PreprocessCache
from napari_kdseg.data.datasets import discover, split_cases
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.preprocess import prepare_volume
from napari_kdseg.evaluation.metrics import dice
from napari_kdseg.inference.model import SegmentationModel
from napari_kdseg.inference.postprocess import count_components, largest_connected_component
from napari_kdseg.inference.quality import (
    CALIBRATION_PATH,
    CHECK,
    OK,
    UNRELIABLE,
    VERDICTS,
    Calibration,
    MaskChecks,
    QualityReport,
    ScanComparison,
    Uncertainty,
    compare_with_training,
    judge,
    score_features,
    summarise_scan,
    training_statistics,
)
from napari_kdseg.inference.segment import segment, slice_probabilities

STUDENTS = ("enet", "enet-from-unetpp-AAM-KMM-LM")
FAILURE_DICE = 0.7
FEATURES = ("self_disagreement", "boundary_entropy", "volume_outside", "extra_components")


@dataclass
class Measured:
    """One segmented case: what the report needs to judge it, and its true Dice."""

    model: str
    site: str
    case: str
    role: str  # "validation" (a training site's held-out case), "unseen" or "real"
    dice: float
    mask: MaskChecks
    uncertainty: Uncertainty
    scan: ScanComparison
    scan_reasons: list[str]
    geometry: Any

    @property
    def failed(self) -> bool:
        return self.dice < FAILURE_DICE

    def report(self, calibration: Calibration) -> QualityReport:
        return judge(
            self.mask, self.uncertainty, self.scan, self.scan_reasons, self.geometry, calibration
        )


def measure(
    network: SegmentationModel,
    prepared: PreparedCase,
    truth: np.ndarray,
    statistics: dict[str, Any] | None,
    **names: str,
) -> Measured:
    """Segment a prepared case as ``segment_prepared`` does and keep the report's inputs."""
    probabilities = slice_probabilities(prepared.image, network, network.preprocess.context)
    raw = prepared.geometry.probabilities_to_source(probabilities)
    labels = largest_connected_component(raw)
    mask = MaskChecks.measure(labels, prepared.geometry, count_components(raw))
    uncertainty = Uncertainty.measure(probabilities)
    scan, reasons = compare_with_training(
        summarise_scan(prepared.image, prepared.geometry), statistics
    )
    return Measured(
        dice=dice(labels, truth),
        mask=mask,
        uncertainty=uncertainty,
        scan=scan,
        scan_reasons=reasons,
        geometry=prepared.geometry,
        **names,  # type: ignore[arg-type]
    )


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-2) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method with a small ridge (a feature that never varies
    on the validation cases keeps a weight of about 0). Returns (weights, bias)."""
    design = np.hstack([np.ones((len(x), 1)), x])
    beta = np.zeros(design.shape[1])
    penalty = ridge * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(design @ beta, -50, 50)))
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta[1:], float(beta[0])


def calibrate(validation: list[Measured], fitted_on: str) -> Calibration:
    """The risk score and thresholds from validation cases only.

    ``ok_below``: the 5th percentile of the failures' risk (at most 5 % of validation failures
    score as ok); ``unreliable_from``: the 95th percentile of the successes' risk (at most 5 %
    of good validation segmentations are called unreliable by the score).
    """
    x = np.array([[score_features(m.mask, m.uncertainty)[f] for f in FEATURES] for m in validation])
    y = np.array([m.failed for m in validation], dtype=float)
    weights, bias = fit_logistic(x, y)
    draft = Calibration(dict(zip(FEATURES, weights.tolist(), strict=True)), bias, 0.0, 1.0)
    risks = np.array([draft.risk(dict(zip(FEATURES, row, strict=True))) for row in x])
    failures, successes = risks[y == 1], risks[y == 0]
    ok_below = float(np.quantile(failures, 0.05)) if failures.size else 0.5
    unreliable_from = float(np.quantile(successes, 0.95)) if successes.size else 0.5
    return replace(
        draft,
        ok_below=round(ok_below, 5),
        unreliable_from=round(max(ok_below, unreliable_from), 5),
        failure_dice=FAILURE_DICE,
        fitted_on=fitted_on,
        extra={
            "validation_cases": len(validation),
            "validation_failures": int(y.sum()),
            "date": date.today().isoformat(),
        },
    )


def auc(scores: list[float], positive: list[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    s, p = np.asarray(scores), np.asarray(positive)
    pos, neg = s[p], s[~p]
    if not pos.size or not neg.size:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def summarise(cases: list[Measured], calibration: Calibration) -> dict[str, Any]:
    """AUC of the risk and of the verdict, and failures per verdict."""
    reports = [m.report(calibration) for m in cases]
    failed = [m.failed for m in cases]
    rank = {OK: 0, CHECK: 1, UNRELIABLE: 2}
    per_verdict = {}
    for verdict in VERDICTS:
        chosen = [f for f, r in zip(failed, reports, strict=True) if r.verdict == verdict]
        per_verdict[verdict] = {"cases": len(chosen), "failures": int(sum(chosen))}
    failures = int(sum(failed))
    return {
        "cases": len(cases),
        "failures": failures,
        "auc_risk": auc([r.risk for r in reports], failed),
        "auc_verdict": auc([rank[r.verdict] for r in reports], failed),
        "per_verdict": per_verdict,
        "failures_let_through_as_ok": per_verdict[OK]["failures"] / failures if failures else 0.0,
    }


def grid_cells(runs: Path) -> list[Path]:
    return sorted(
        path
        for path in runs.glob("*/seed*/*/enet.keras")
        if path.parent.name in STUDENTS and (path.parent / "enet.json").is_file()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("/work/runs/study-F"))
    parser.add_argument("--dataset", type=Path, default=Path("/work/runs/phantom"))
    parser.add_argument(
        "--real", type=Path, default=Path("/work/shared/data/real/promise12_case00")
    )
    parser.add_argument("--onnx", type=Path, help="an exported student to time segment with")
    parser.add_argument("--work", type=Path, default=Path("/tmp/quality-bench"))
    parser.add_argument("--write-calibration", action="store_true")
    args = parser.parse_args()

    from napari_kdseg.inference.model import load_keras

    args.work.mkdir(parents=True, exist_ok=True)
    cache = PreprocessCache(args.work / "cache")
    dataset = discover(args.dataset)
    real_scan = read_volume(args.real / "Case00.nii.gz") if args.real.is_dir() else None
    real_truth = (
        read_volume(args.real / "Case00_segmentation.nii.gz", labels=True).array > 0
        if real_scan is not None
        else None
    )
    truths: dict[tuple[str, str], np.ndarray] = {}

    def truth_of(case: Any) -> np.ndarray:
        key = (case.site, case.id)
        if key not in truths:
            truths[key] = read_volume(case.label, labels=True).array > 0
        return truths[key]

    measured: list[Measured] = []
    statistics_of: dict[str, dict[str, Any] | None] = {}
    started = time.perf_counter()
    for path in grid_cells(args.runs):
        card = ModelCard.read_beside(path)
        training = card.training or {}
        sites = list(card.training_sites or ())
        target = path.parts[-4]
        name = "/".join(path.parts[-4:-1])
        kept, held = [], []
        for site in sites:
            site_kept, site_held = split_cases(
                dataset.cases([site]), training["validation_fraction"], training["seed"]
            )
            kept += site_kept
            held += site_held
        config = card.preprocess
        statistics = training_statistics(
            [summarise_scan(p.image, p.geometry, p.label) for p in cache.prepare_all(kept, config)]
        )
        statistics_of[name] = statistics
        model = load_keras(path)
        for role, cases in (("validation", held), ("unseen", dataset.cases([target]))):
            for case in cases:
                prepared = cache.prepare(case, config)
                measured.append(
                    measure(
                        model,
                        prepared,
                        truth_of(case),
                        statistics,
                        model=name,
                        site=case.site,
                        case=case.id,
                        role=role,
                    )
                )
        if real_scan is not None and real_truth is not None:
            image, geometry = prepare_volume(real_scan, config)
            prepared = PreparedCase("real", "promise12_case00", image, None, geometry)
            measured.append(
                measure(
                    model,
                    prepared,
                    real_truth,
                    statistics,
                    model=name,
                    site="real",
                    case="promise12_case00",
                    role="real",
                )
            )
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)

    validation = [m for m in measured if m.role == "validation"]
    unseen = [m for m in measured if m.role == "unseen"]
    real = [m for m in measured if m.role == "real"]
    fitted_on = (
        f"{len(validation)} training-site validation cases of {args.runs} "
        f"({len(statistics_of)} students, phantom, model grid 64)"
    )
    calibration = calibrate(validation, fitted_on)
    if args.write_calibration:
        CALIBRATION_PATH.write_text(json.dumps(calibration.to_json(), indent=2) + "\n")
    results: dict[str, Any] = {
        "calibration": calibration.to_json(),
        "validation (in-sample)": summarise(validation, calibration),
        "unseen sites": summarise(unseen, calibration),
        "unseen sites by student": {
            student: summarise([m for m in unseen if m.model.endswith(student)], calibration)
            for student in STUDENTS
        },
        "unseen sites by target": {
            target: summarise([m for m in unseen if m.site == target], calibration)
            for target in sorted({m.site for m in unseen})
        },
    }
    if real:
        reports = [m.report(calibration) for m in real]
        results["real promise12_case00"] = {
            "students": len(real),
            "dice": {
                "median": float(np.median([m.dice for m in real])),
                "max": max(m.dice for m in real),
            },
            "verdicts": {v: sum(r.verdict == v for r in reports) for v in VERDICTS},
            "example": {"model": real[0].model, "dice": real[0].dice, **reports[0].to_json()},
        }
    if args.onnx is not None:
        results["timing"] = time_report(args.onnx, dataset, real_scan, statistics_of)
    out = args.work / "results.json"
    out.write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps({k: v for k, v in results.items() if k != "calibration"}, indent=1))
    print(f"calibration: {json.dumps(calibration.to_json())}")
    print(f"wrote {out}")


def time_report(
    onnx: Path,
    dataset: Any,
    real_scan: Any,
    statistics_of: dict[str, dict[str, Any] | None],
) -> dict[str, Any]:
    """``segment`` (read scan in memory, preprocess, infer, post-process) without and with the
    quality report, best of 3, on the exported student (one ONNX Runtime thread), no flips.
    The card gets the training statistics of its grid cell so the comparison runs too."""
    from napari_kdseg.inference.onnx_runtime import load_onnx

    model = load_onnx(onnx, threads=1)
    card = ModelCard.from_json(model.card, onnx)
    cell = next(
        (k for k in statistics_of if k.endswith("enet") and k.split("/")[0] == _target(card)),
        None,
    )
    model = replace(model, card=model.card | {"training_statistics": statistics_of.get(cell)})
    scans = [read_volume(c.image) for c in dataset.cases()[::4]]
    if real_scan is not None:
        scans.append(real_scan)
    rows = []
    for scan in scans:
        plain = min(_timed(lambda s=scan: segment(s, model, quality=False)) for _ in range(3))
        full = min(_timed(lambda s=scan: segment(s, model, quality=True)) for _ in range(3))
        rows.append({"scan": str(scan.source), "shape": list(scan.shape), "without": plain,
                     "with": full, "overhead": full / plain - 1})  # fmt: skip
    return {
        "model": str(onnx),
        "runtime": model.runtime,
        "cases": rows,
        "median_overhead": float(np.median([r["overhead"] for r in rows])),
        "max_overhead": float(max(r["overhead"] for r in rows)),
    }


def _target(card: ModelCard) -> str:
    """The site a leave-one-site-out model did not train on."""
    every = {"A", "B", "C", "D", "E", "F"}
    missing = sorted(every - set(card.training_sites or ()))
    return missing[0] if missing else ""


def _timed(run: Any) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
