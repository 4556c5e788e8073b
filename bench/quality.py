"""Is the quality flag calibrated? Choose and fit it on training-site validation cases, score
unseen sites.

For every finished cell of a leave-one-site-out grid (``<runs>/<target>/seed<N>/<student>/``,
both students), the model's training sites are split as training split them
(``split_cases`` with the card's ``validation_fraction`` and ``seed``):

1. the training statistics are computed from the training sites' kept cases with the same
   function the card writer uses (these cards predate the section);
2. every held-out (validation) case of a training site is segmented (plus a left-right and an
   up-down flipped pass, for the flip measurements) and measured: these choose the
   measurements of the risk score (greedy forward selection by cross-validated AUC, the
   folds splitting students) and fit it (a logistic regression of "Dice below 0.7" on the
   standardised measurements) and the verdict thresholds;
3. every case of the unseen target site is segmented and judged with that calibration: the
   AUC of the risk for "Dice below 0.7", and the failures each verdict lets through. Every
   feature set's unseen AUC is printed too, for the record: it chooses nothing.

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
import numpy.typing as npt
from scipy import ndimage

from napari_kdseg.card import ModelCard
from napari_kdseg.data.cache import PreparedCase, PreprocessCache
from napari_kdseg.data.datasets import discover, split_cases
from napari_kdseg.data.io import read_volume
from napari_kdseg.data.preprocess import prepare_volume, reorient
from napari_kdseg.data.volume import Volume
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
#: The measurements of the calibration before issue 18, kept as the baseline feature set.
BASELINE = ("self_disagreement", "boundary_entropy", "volume_outside", "extra_components")
#: Measurements that need a flipped pass, which ``segment`` runs only with test-time flips:
#: the shipped score is chosen without them, the selection with them is printed beside it.
FLIP_FEATURES = (
    "lr_disagreement",
    "lr_probability_difference",
    "ud_disagreement",
    "lr_mean_self_disagreement",
    "flip_disagreement",
)
#: Feature sets tried by hand besides the greedy paths.
HAND_SETS = {
    "baseline": BASELINE,
    "baseline + sphericity": (*BASELINE, "sphericity"),
    "baseline + area_excess": (*BASELINE, "area_excess"),
    "baseline + area_roughness": (*BASELINE, "area_roughness"),
    "baseline + end_slice_fraction": (*BASELINE, "end_slice_fraction"),
    "baseline + touches_end": (*BASELINE, "touches_end"),
    "baseline + edge_fraction": (*BASELINE, "edge_fraction"),
    "baseline + log_volume": (*BASELINE, "log_volume"),
    "baseline + probability statistics": (
        *BASELINE, "mean_probability_inside", "uncertain_fraction", "boundary_entropy_q90"
    ),
    "baseline + soft_volume_ratio": (*BASELINE, "soft_volume_ratio"),
    "baseline + all shape": (
        *BASELINE, "sphericity", "area_roughness", "end_slice_fraction", "edge_fraction",
        "log_volume",
    ),
    "baseline + lr_disagreement": (*BASELINE, "lr_disagreement"),
    "baseline + sphericity + lr_disagreement": (*BASELINE, "sphericity", "lr_disagreement"),
    "self_disagreement + sphericity + extra_components": (
        "self_disagreement", "sphericity", "extra_components"
    ),
    "sphericity + lr_disagreement": ("sphericity", "lr_disagreement"),
    "baseline + every no-flip measurement": (
        *BASELINE, "sphericity", "area_roughness", "area_excess", "end_slice_fraction",
        "edge_fraction", "log_volume", "mean_probability_inside", "uncertain_fraction",
        "boundary_entropy_q90", "soft_volume_ratio",
    ),
}  # fmt: skip
#: Ridge on the standardised weights: mild, so that 180 cases do not fit noise.
RIDGE = 1.0
#: Cross-validation: folds of whole students (a student's five cases share its errors),
#: repeated with shuffled students, AUC of the pooled out-of-fold risks averaged.
CV_FOLDS, CV_REPEATS = 6, 10
#: Forward selection stops when the next measurement adds less than this to the CV AUC.
MIN_GAIN = 0.01
#: Rounds of the timing; the fastest of each is kept.
TIMING_ROUNDS = 7
#: Flips of a (slices, rows, columns) scan.
LEFT_RIGHT, UP_DOWN = 2, 1
_IN_PLANE_3X3 = np.ones((1, 3, 3), dtype=bool)


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
    features: dict[str, float]  # every candidate measurement

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
    """Segment a prepared case as ``segment_prepared`` does (no flips) and keep the report's
    inputs and every candidate measurement."""
    context = network.preprocess.context
    probabilities = slice_probabilities(prepared.image, network, context)
    flipped = {}
    for axis in (LEFT_RIGHT, UP_DOWN):
        image = np.ascontiguousarray(np.flip(prepared.image, axis))
        flipped[axis] = np.flip(slice_probabilities(image, network, context)[..., 1:].sum(-1), axis)
    raw = prepared.geometry.probabilities_to_source(probabilities)
    labels = largest_connected_component(raw)
    mask = MaskChecks.measure(labels, prepared.geometry, count_components(raw))
    uncertainty = Uncertainty.measure(probabilities)
    canonical = reorient(
        Volume(labels > 0, prepared.geometry.source_affine), prepared.geometry.orientation
    )
    features = score_features(mask, uncertainty) | candidate_features(
        mask, canonical, 1.0 - probabilities[..., 0], flipped
    )
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
        features=features,
        **names,  # type: ignore[arg-type]
    )


def candidate_features(
    mask: MaskChecks,
    canonical: npt.NDArray[np.bool_],
    foreground: npt.NDArray[np.floating],
    flipped: dict[int, npt.NDArray[np.floating]],
) -> dict[str, float]:
    """The candidate measurements the report does not make: more of the mask's shape (on the
    scan's grid, ``canonical``), the probability map's statistics and the flipped passes'
    agreement (model grid; ``flipped`` maps a flipped axis to its foreground probabilities,
    flipped back)."""
    outline = canonical & ~ndimage.binary_erosion(canonical, _IN_PLANE_3X3, border_value=0)
    border = np.zeros_like(canonical)
    border[:, [0, -1], :] = border[:, :, [0, -1]] = True
    areas = canonical.sum(axis=(1, 2)).astype(np.float64)
    spanned = np.flatnonzero(areas)
    profile = np.pad(areas[spanned[0] : spanned[-1] + 1], 1) if spanned.size else np.zeros(2)
    inside = foreground > 0.5
    band = ndimage.binary_dilation(inside, _IN_PLANE_3X3) & ~ndimage.binary_erosion(
        inside, _IN_PLANE_3X3, border_value=1
    )
    p = np.clip(foreground, 1e-7, 1 - 1e-7)
    entropy = (-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))[band]
    masks = [inside, flipped[LEFT_RIGHT] > 0.5, flipped[UP_DOWN] > 0.5]
    union = inside | masks[1]
    mean = (foreground + flipped[LEFT_RIGHT]) / 2
    mean_mask = mean > 0.5
    denominator = float(mean.sum() + mean_mask.sum())
    pairs = [_agreement(masks[0], masks[1]), _agreement(masks[0], masks[2]),
             _agreement(masks[1], masks[2])]  # fmt: skip
    return {
        "log_volume": float(np.log(max(mask.volume_cc, 1e-3))),
        "touches_end": float(mask.touches_end_slice),
        "edge_fraction": float((outline & border).sum() / max(1, outline.sum())),
        "area_excess": float(np.abs(np.diff(profile)).sum() / max(1.0, 2 * profile.max()) - 1),
        "slice_coverage": float(spanned.size / len(canonical)),
        "mean_probability_inside": float(foreground[inside].mean()) if inside.any() else 0.0,
        "uncertain_fraction": float(((p > 0.1) & (p < 0.9)).sum() / max(1, inside.sum())),
        **{
            f"boundary_entropy_q{q}": float(np.percentile(entropy, q)) if entropy.size else 0.0
            for q in (50, 75, 90)
        },
        "soft_volume_ratio": float(foreground.sum() / max(1, inside.sum())),
        "lr_disagreement": 1 - pairs[0],
        "lr_probability_difference": float(
            np.abs(foreground - flipped[LEFT_RIGHT])[union].mean() if union.any() else 0.0
        ),
        "ud_disagreement": 1 - pairs[1],
        "lr_mean_self_disagreement": 1 - 2 * float((mean * mean_mask).sum()) / denominator
        if denominator
        else 1.0,
        "flip_disagreement": 1 - float(np.mean(pairs)),
    }


def _agreement(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Dice of two masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method with a ridge on the weights (a feature that never
    varies on the fitting cases keeps a weight of about 0). Returns (weights, bias)."""
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


def fit_standardised(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`fit_logistic` on the standardised features (so that the ridge weighs every
    measurement alike), returned as weights and bias on the raw features."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    weights, bias = fit_logistic((x - mean) / scale, y)
    return weights / scale, bias - float((weights * mean / scale).sum())


def table(cases: list[Measured], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[m.features[name] for name in names] for m in cases])


def cv_auc(validation: list[Measured], names: tuple[str, ...]) -> float:
    """Cross-validated AUC on the validation cases: :data:`CV_FOLDS` folds of whole students,
    :data:`CV_REPEATS` shuffles, the pooled out-of-fold risks' AUC averaged."""
    x, y = table(validation, names), np.array([m.failed for m in validation], dtype=float)
    students = np.array([m.model for m in validation])
    aucs = []
    for repeat in range(CV_REPEATS):
        order = np.random.default_rng(repeat).permutation(np.unique(students))
        scores = np.zeros(len(y))
        for fold in np.array_split(order, CV_FOLDS):
            held = np.isin(students, fold)
            weights, bias = fit_standardised(x[~held], y[~held])
            scores[held] = x[held] @ weights + bias
        aucs.append(auc(scores.tolist(), (y == 1).tolist()))
    return float(np.mean(aucs))


def score_set(
    names: tuple[str, ...], validation: list[Measured], unseen: list[Measured]
) -> dict[str, float]:
    """A feature set's validation AUC (in-sample and cross-validated) and, for the record
    only, its unseen sites' AUC when fitted on every validation case."""
    weights, _ = fit_standardised(
        table(validation, names), np.array([m.failed for m in validation], dtype=float)
    )
    return {
        "validation": auc(
            (table(validation, names) @ weights).tolist(), [m.failed for m in validation]
        ),
        "validation_cv": cv_auc(validation, names),
        "unseen": auc((table(unseen, names) @ weights).tolist(), [m.failed for m in unseen]),
    }


def forward_selection(
    pool: list[str], validation: list[Measured], unseen: list[Measured], steps: int = 7
) -> list[dict[str, Any]]:
    """Greedy forward selection by cross-validated validation AUC: each step adds the
    measurement that raises it most. All ``steps`` are returned; :func:`chosen` cuts them."""
    path: list[dict[str, Any]] = []
    names: tuple[str, ...] = ()
    for _ in range(steps):
        best = max(
            (c for c in pool if c not in names), key=lambda c: cv_auc(validation, (*names, c))
        )
        names = (*names, best)
        path.append({"added": best, **score_set(names, validation, unseen)})
    return path


def chosen(path: list[dict[str, Any]]) -> tuple[str, ...]:
    """The path up to the last step that added at least :data:`MIN_GAIN` to the CV AUC."""
    names: list[str] = []
    previous = 0.5
    for step in path:
        if step["validation_cv"] - previous < MIN_GAIN:
            break
        names.append(step["added"])
        previous = step["validation_cv"]
    return tuple(names)


def calibrate(validation: list[Measured], names: tuple[str, ...], fitted_on: str) -> Calibration:
    """The risk score of ``names`` and the thresholds from validation cases only.

    ``ok_below``: the 5th percentile of the failures' risk (at most 5 % of validation failures
    score as ok); ``unreliable_from``: the 95th percentile of the successes' risk (at most 5 %
    of good validation segmentations are called unreliable by the score); ``typical``: each
    measurement's median over the successes.
    """
    x = table(validation, names)
    y = np.array([m.failed for m in validation], dtype=float)
    weights, bias = fit_standardised(x, y)
    draft = Calibration(dict(zip(names, weights.tolist(), strict=True)), bias, 0.0, 1.0)
    risks = np.array([draft.risk(dict(zip(names, row, strict=True))) for row in x])
    failures, successes = risks[y == 1], risks[y == 0]
    ok_below = float(np.quantile(failures, 0.05)) if failures.size else 0.5
    unreliable_from = float(np.quantile(successes, 0.95)) if successes.size else 0.5
    return replace(
        draft,
        ok_below=round(ok_below, 5),
        unreliable_from=round(max(ok_below, unreliable_from), 5),
        failure_dice=FAILURE_DICE,
        fitted_on=fitted_on,
        typical={
            name: round(float(np.median(x[y == 0, i])), 5) if (y == 0).any() else 0.0
            for i, name in enumerate(names)
        },
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
    candidates = sorted(validation[0].features)
    no_flip = [name for name in candidates if name not in FLIP_FEATURES]
    path = forward_selection(no_flip, validation, unseen)
    selection = {
        "single": {name: score_set((name,), validation, unseen) for name in candidates},
        "by hand": {
            label: score_set(names, validation, unseen) for label, names in HAND_SETS.items()
        },
        "forward, no flips": path,
        "forward, with flips": forward_selection(candidates, validation, unseen),
    }
    selection["chosen"] = {
        "no flips (shipped)": chosen(path),
        "with flips": chosen(selection["forward, with flips"]),
    }
    calibration = calibrate(validation, selection["chosen"]["no flips (shipped)"], fitted_on)
    if args.write_calibration:
        CALIBRATION_PATH.write_text(json.dumps(calibration.to_json(), indent=2) + "\n")
    results: dict[str, Any] = {
        "calibration": calibration.to_json(),
        "feature selection": selection,
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
    shown = {k: v for k, v in results.items() if k not in ("calibration", "feature selection")}
    print(json.dumps(shown, indent=1))
    print_selection(selection)
    print(f"calibration: {json.dumps(calibration.to_json())}")
    print(f"wrote {out}")


def print_selection(selection: dict[str, Any]) -> None:
    """The feature sets tried: validation AUC in-sample and cross-validated, unseen AUC."""
    print("AUC of the risk: validation in-sample / validation cross-validated / unseen sites")
    for part in ("single", "by hand"):
        print(f"{part}:")
        for label, row in selection[part].items():
            print(f"  {label:60s} {_aucs(row)}")
    for part in ("forward, no flips", "forward, with flips"):
        print(f"{part}:")
        for row in selection[part]:
            print(f"  + {row['added']:58s} {_aucs(row)}")
    print(f"chosen: {selection['chosen']}")


def _aucs(row: dict[str, float]) -> str:
    return f"{row['validation']:.3f} / {row['validation_cv']:.3f} / {row['unseen']:.3f}"


def time_report(
    onnx: Path,
    dataset: Any,
    real_scan: Any,
    statistics_of: dict[str, dict[str, Any] | None],
) -> dict[str, Any]:
    """``segment`` (read scan in memory, preprocess, infer, post-process) without and with the
    quality report, on the exported student (one ONNX Runtime thread), no flips; beside them
    one left-right flipped pass alone, what a flip measurement would add. Best of
    :data:`TIMING_ROUNDS`, the three taking turns in each round so that load from other work
    falls on all of them; ``stage`` is the report's own stage (``seconds["quality"]``) over
    the time without it, the same overhead measured inside one run.
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
    context = model.preprocess.context
    for scan in scans:
        image, _ = prepare_volume(scan, model.preprocess)
        flipped = np.ascontiguousarray(np.flip(image, LEFT_RIGHT))
        rounds = []
        for _ in range(TIMING_ROUNDS):
            plain = _timed(lambda s=scan: segment(s, model, quality=False))
            started = time.perf_counter()
            stage = segment(scan, model, quality=True).seconds["quality"]
            full = time.perf_counter() - started
            flip = _timed(lambda f=flipped: slice_probabilities(f, model, context))
            rounds.append((plain, full, stage, flip))
        plain, full, stage, flip = np.min(rounds, axis=0).tolist()
        rows.append({"scan": str(scan.source), "shape": list(scan.shape), "without": plain,
                     "with": full, "overhead": full / plain - 1, "stage": stage / plain,
                     "flip_pass": flip / plain})  # fmt: skip
    return {
        "model": str(onnx),
        "runtime": model.runtime,
        "cases": rows,
        "median_overhead": float(np.median([r["overhead"] for r in rows])),
        "max_overhead": float(max(r["overhead"] for r in rows)),
        "median_stage": float(np.median([r["stage"] for r in rows])),
        "max_stage": float(max(r["stage"] for r in rows)),
        "median_flip_pass": float(np.median([r["flip_pass"] for r in rows])),
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
