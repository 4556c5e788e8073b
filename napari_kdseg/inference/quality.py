"""Know when not to trust a student: a quality report for every segmentation.

One report, three kinds of evidence, one verdict:

1. **plausibility of the mask** on the scan's own grid: gland volume (cc), extents (mm),
   connected components before the largest one is kept, slices missing inside the gland, and
   contact with the edge of the scanned field of view (after TAPS's own checks,
   :class:`napari_kdseg.teachers.taps.TapsChecks`);
2. **the model's own uncertainty** on the model grid: the agreement between the class
   probabilities and the mask they give (an "expected Dice"), the mean entropy along the
   predicted boundary and, with flip test-time augmentation, the agreement between the flips;
   per volume and per slice;
3. **distance of the scan from the training data**: pixel spacing, slice thickness, field of
   view and the intensity histogram after normalisation, against the summary the model card
   records of the training scans (section ``training_statistics``; an older card has none, and
   this part then says "unknown").

The verdict (``ok``, ``check``, ``unreliable``) comes from a risk score, the probability that
the Dice is below 0.7 by a logistic model of a few of these measurements (the shipped one
weighs the mask's shape: its sphericity, how unevenly its area runs from slice to slice and
its share on the scan's end slices), with the measurements chosen and the thresholds fitted
on the training sites' validation cases by ``bench/quality.py`` (``quality_calibration.json``
beside this module), plus rules for what no validation case can show (an empty mask, a scan
unlike the training scans). Reasons are written for a clinician.

NumPy, SciPy and scikit-image only: no Keras, no Qt (the napari panel and ``kdseg segment``
both use it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.measure import marching_cubes, mesh_surface_area

from napari_kdseg.data.preprocess import Geometry, reorient
from napari_kdseg.data.volume import Volume
from napari_kdseg.inference.postprocess import count_components

OK, CHECK, UNRELIABLE = "ok", "check", "unreliable"
VERDICTS = (OK, CHECK, UNRELIABLE)
#: Where ``bench/quality.py --write-calibration`` writes the fitted score and thresholds.
CALIBRATION_PATH = Path(__file__).with_name("quality_calibration.json")
CALIBRATION_FORMAT = "napari-kdseg quality calibration 1"
#: Edges of the intensity histogram after the z-score; values beyond fall in the end bins.
HISTOGRAM_EDGES = tuple(float(x) for x in np.linspace(-3.0, 5.0, 33))
#: A healthy adult prostate is about 15-80 cc (TAPS's plausibility range); far outside it the
#: mask cannot be a whole gland whatever the model.
PROSTATE_CC = (15.0, 80.0)
IMPLAUSIBLE_CC = (5.0, 250.0)
#: TAPS flags any gland extent outside 10-150 mm.
PROSTATE_EXTENT_MM = (10.0, 150.0)
#: Spacings and fields of view within this factor of the training range count as seen.
GEOMETRY_TOLERANCE = 1.1
#: How many of the least certain slices the report names.
WORST_SLICES = 3
#: How many of the measurements that raise the risk most a reason names.
RISK_DRIVERS = 2

_IN_PLANE_3X3 = np.ones((1, 3, 3), dtype=bool)


# --------------------------------------------------------------------------- scan summaries


@dataclass(frozen=True)
class ScanSummary:
    """What the quality report compares between a scan and the training scans.

    ``spacing_mm`` and ``fov_mm`` are in the model's canonical order (slice, row, column):
    slice thickness, then the in-plane pixel size; the field of view is spacing x voxels.
    ``histogram`` is the share of voxels in each bin of :data:`HISTOGRAM_EDGES` after the
    z-score (what the network sees). ``gland_cc`` is the gland volume when a mask is known.
    """

    spacing_mm: tuple[float, float, float]
    fov_mm: tuple[float, float, float]
    histogram: tuple[float, ...]
    gland_cc: float | None = None


def summarise_scan(
    image: npt.NDArray[np.floating],
    geometry: Geometry,
    label: npt.NDArray[np.integer] | None = None,
) -> ScanSummary:
    """The summary of a preprocessed scan ``(slices, size, size)`` (z-scored, on the model
    grid) and its geometry; ``label`` is its mask on the same grid, when known."""
    canonical = geometry.canonical_affine
    sizes = np.sqrt((canonical[:3, :3] ** 2).sum(axis=0))[::-1]  # (slice, row, column)
    spacing = tuple(float(s) for s in sizes)
    fov = tuple(float(s * n) for s, n in zip(sizes, geometry.canonical_shape, strict=True))
    edges = np.asarray(HISTOGRAM_EDGES)
    clipped = np.clip(np.asarray(image, dtype=np.float32), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    histogram = tuple(float(c) for c in counts / max(1, counts.sum()))
    gland = None
    if label is not None:
        gland = float(np.count_nonzero(label)) * float(np.prod(geometry.model_spacing)) / 1000
    return ScanSummary(spacing, fov, histogram, gland)  # type: ignore[arg-type]


def histogram_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Total variation distance between two histograms (0 same, 1 disjoint)."""
    return 0.5 * float(np.abs(np.asarray(a) - np.asarray(b)).sum())


def training_statistics(summaries: Sequence[ScanSummary]) -> dict[str, Any] | None:
    """The card's ``training_statistics`` section: a compact summary of the training scans
    (ranges of spacing, field of view and gland volume; the mean intensity histogram and how
    far the farthest training scan lies from it). None without scans."""
    if not summaries:
        return None
    spacing = np.array([s.spacing_mm for s in summaries])
    fov = np.array([s.fov_mm for s in summaries])
    histograms = np.array([s.histogram for s in summaries])
    mean = histograms.mean(axis=0)
    distances = [histogram_distance(h, mean) for h in histograms]
    glands = [s.gland_cc for s in summaries if s.gland_cc is not None]
    statistics: dict[str, Any] = {
        "cases": len(summaries),
        "axes": "slice, row, column",
        "spacing_mm": {"min": _rounded(spacing.min(0)), "max": _rounded(spacing.max(0))},
        "fov_mm": {"min": _rounded(fov.min(0)), "max": _rounded(fov.max(0))},
        "histogram": {
            "edges": list(HISTOGRAM_EDGES),
            "mean": _rounded(mean, 5),
            "max_distance": round(max(distances), 5),
        },
    }
    if glands:
        statistics["gland_cc"] = {
            "min": round(min(glands), 2),
            "median": round(float(np.median(glands)), 2),
            "max": round(max(glands), 2),
        }
    return statistics


def _rounded(values: npt.ArrayLike, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in np.ravel(values)]


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """The fitted risk score and verdict thresholds.

    ``risk = sigmoid(bias + sum(weights[f] * feature f))`` estimates the probability that the
    Dice is below ``failure_dice``; a risk below ``ok_below`` is ``ok``, at or above
    ``unreliable_from`` ``unreliable``, between them ``check``. ``fitted_on`` says where.
    ``typical`` holds each weighted measurement's median over the good validation outlines:
    a reason names the measurements that raise the risk most above it.
    """

    weights: dict[str, float]
    bias: float
    ok_below: float
    unreliable_from: float
    failure_dice: float = 0.7
    fitted_on: str = ""
    typical: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def risk(self, features: Mapping[str, float]) -> float:
        z = self.bias + sum(w * float(features[name]) for name, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def drivers(self, features: Mapping[str, float]) -> list[str]:
        """The weighted measurements that raise the risk above a typical good outline's,
        most first (at most :data:`RISK_DRIVERS`)."""
        raised = {
            name: w * (float(features[name]) - self.typical[name])
            for name, w in self.weights.items()
            if name in self.typical
        }
        raising = [name for name, lift in raised.items() if lift > 0]
        return sorted(raising, key=lambda name: -raised[name])[:RISK_DRIVERS]

    def to_json(self) -> dict[str, Any]:
        data = {"format": CALIBRATION_FORMAT, **asdict(self)}
        data |= data.pop("extra")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        if data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"not a quality calibration (format {data.get('format')!r})")
        known = {item.name for item in fields(cls)} - {"extra"}
        return cls(
            weights={str(k): float(v) for k, v in data["weights"].items()},
            bias=float(data["bias"]),
            ok_below=float(data["ok_below"]),
            unreliable_from=float(data["unreliable_from"]),
            failure_dice=float(data.get("failure_dice", 0.7)),
            fitted_on=str(data.get("fitted_on", "")),
            typical={str(k): float(v) for k, v in data.get("typical", {}).items()},
            extra={k: v for k, v in data.items() if k not in known | {"format"}},
        )


@cache
def default_calibration() -> Calibration:
    """The calibration shipped beside this module (written by ``bench/quality.py``)."""
    return Calibration.from_json(json.loads(CALIBRATION_PATH.read_text()))


# --------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class MaskChecks:
    """Plausibility of a mask on the scan's grid, in canonical (slice, row, column) order.

    The shape measurements: ``sphericity`` is ``(36 pi V^2 / A^3)^(1/3)`` with the area of a
    marching-cubes surface (1 for a ball; a gland outlined well is rounded, a poor outline
    frayed or flat); ``area_roughness`` the summed absolute second difference of the area per
    slice, from an empty slice before the gland to one after it, over the summed area (a
    gland's area grows and shrinks smoothly; a jump, or a gland cut off at full width, adds
    to it); ``end_slice_fraction`` the share of the mask on the scan's first and last slices.
    """

    volume_cc: float
    extent_mm: tuple[float, float, float]
    components: int
    gap_slices: int
    touches_edge_in_plane: bool
    touches_end_slice: bool
    sphericity: float
    area_roughness: float
    end_slice_fraction: float

    @classmethod
    def measure(
        cls, labels: npt.NDArray[np.integer], geometry: Geometry, components: int | None = None
    ) -> MaskChecks:
        """``labels`` on the source grid of ``geometry``; ``components`` counts the connected
        parts before post-processing kept the largest (default: counted here)."""
        volume = Volume(np.asarray(labels) > 0, geometry.source_affine)
        mask = reorient(volume, geometry.orientation)
        sizes = np.sqrt((geometry.canonical_affine[:3, :3] ** 2).sum(axis=0))[::-1]
        volume_cc = float(np.count_nonzero(mask)) * float(np.prod(sizes)) / 1000
        if components is None:
            components = count_components(mask)
        occupied = np.argwhere(mask)
        if occupied.size == 0:
            return cls(0.0, (0.0, 0.0, 0.0), 0, 0, False, False, 0.0, 0.0, 0.0)
        low, high = occupied.min(axis=0), occupied.max(axis=0) + 1
        extent = (high - low) * sizes
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        gaps = int((slices[-1] - slices[0] + 1) - slices.size)
        in_plane = bool(mask[:, [0, -1], :].any() or mask[:, :, [0, -1]].any())
        end_slice = bool(mask[0].any() or mask[-1].any())
        box = mask[tuple(slice(a, b) for a, b in zip(low, high, strict=True))]
        areas = np.pad(box.sum(axis=(1, 2)).astype(np.float64), 1)
        ends = sorted({0, len(mask) - 1})  # one slice is both ends
        return cls(
            volume_cc=volume_cc,
            extent_mm=tuple(float(e) for e in extent),  # type: ignore[arg-type]
            components=components,
            gap_slices=gaps,
            touches_edge_in_plane=in_plane,
            touches_end_slice=end_slice,
            sphericity=_sphericity(box, sizes),
            area_roughness=float(np.abs(np.diff(areas, 2)).sum() / areas.sum()),
            end_slice_fraction=float(np.count_nonzero(mask[ends]) / occupied.shape[0]),
        )


def _sphericity(mask: npt.NDArray[np.bool_], spacing: npt.NDArray[np.float64]) -> float:
    """Sphericity of a non-empty mask, its voxels ``spacing`` mm apart."""
    padded = np.pad(mask, 1).astype(np.float32)  # a closed surface where the mask meets the box
    vertices, faces, _, _ = marching_cubes(padded, 0.5, spacing=tuple(float(s) for s in spacing))
    area = mesh_surface_area(vertices, faces)
    volume = float(np.count_nonzero(mask)) * float(np.prod(spacing))
    return float((36 * math.pi * volume**2 / area**3) ** (1 / 3))


@dataclass(frozen=True)
class Uncertainty:
    """The model's own uncertainty, per volume and per slice of the model grid.

    ``expected_dice`` is the Dice between the foreground probabilities and the mask they give
    (1: every pixel certain); ``boundary_entropy`` the mean binary entropy (bits, 0 to 1) in a
    one-pixel band on both sides of the predicted boundary; ``flip_agreement`` the mean Dice
    between the masks of the flip passes (None without test-time augmentation). Per-slice
    values are NaN where a slice has no predicted boundary.
    """

    expected_dice: float
    boundary_entropy: float
    flip_agreement: float | None
    slice_entropy: npt.NDArray[np.float64]
    slice_expected_dice: npt.NDArray[np.float64]

    @classmethod
    def measure(
        cls,
        probabilities: npt.NDArray[np.floating],
        flip_masks: Sequence[npt.NDArray[np.bool_]] | None = None,
    ) -> Uncertainty:
        """From class probabilities ``(slices, size, size, classes)`` (class 0 background)."""
        foreground = 1.0 - np.asarray(probabilities[..., 0], dtype=np.float64)
        mask = foreground > 0.5
        band = ndimage.binary_dilation(mask, _IN_PLANE_3X3) & ~ndimage.binary_erosion(
            mask, _IN_PLANE_3X3, border_value=1
        )
        p = np.clip(foreground, 1e-7, 1 - 1e-7)
        entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
        in_band = band.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            slice_entropy = (entropy * band).sum(axis=(1, 2)) / in_band
            overlap = (foreground * mask).sum(axis=(1, 2))
            total = foreground.sum(axis=(1, 2)) + mask.sum(axis=(1, 2))
            slice_dice = np.where(total > 1e-6, 2 * overlap / total, np.nan)
        slice_dice[in_band == 0] = np.nan
        total_band = int(in_band.sum())
        boundary = float((entropy * band).sum() / total_band) if total_band else 0.0
        denominator = float(foreground.sum() + mask.sum())
        expected = 2 * float((foreground * mask).sum()) / denominator if denominator else 0.0
        agreement = None
        if flip_masks is not None and len(flip_masks) > 1:
            pairs = [_dice(a, b) for i, a in enumerate(flip_masks) for b in flip_masks[i + 1 :]]
            agreement = float(np.mean(pairs))
        return cls(expected, boundary, agreement, slice_entropy, slice_dice)


def _dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


@dataclass(frozen=True)
class ScanComparison:
    """How the scan compares with the training scans; ``known`` False for an old card."""

    known: bool
    spacing_outside: bool = False
    thickness_outside: bool = False
    fov_outside: bool = False
    histogram_distance: float | None = None
    histogram_limit: float | None = None

    @property
    def unlike_training(self) -> bool:
        return self.known and (
            self.spacing_outside
            or self.thickness_outside
            or self.fov_outside
            or self.histogram_outside
        )

    @property
    def histogram_outside(self) -> bool:
        if self.histogram_distance is None or self.histogram_limit is None:
            return False
        return self.histogram_distance > self.histogram_limit


def compare_with_training(
    summary: ScanSummary, statistics: Mapping[str, Any] | None
) -> tuple[ScanComparison, list[str]]:
    """The scan against the card's ``training_statistics``, and the reasons in words."""
    if not statistics:
        return ScanComparison(known=False), []
    low = np.asarray(statistics["spacing_mm"]["min"], dtype=float)
    high = np.asarray(statistics["spacing_mm"]["max"], dtype=float)
    spacing = np.asarray(summary.spacing_mm)
    reasons = []

    def outside(value: npt.NDArray[Any], lo: npt.NDArray[Any], hi: npt.NDArray[Any]) -> bool:
        return bool(
            np.any(value < lo / GEOMETRY_TOLERANCE) or np.any(value > hi * GEOMETRY_TOLERANCE)
        )

    pixel_outside = outside(spacing[1:], low[1:], high[1:])
    if pixel_outside:
        reasons.append(
            f"the scan's pixel spacing ({_mm_pair(spacing[1:])}) is unlike any training scan "
            f"({low[1:].min():.2f}-{high[1:].max():.2f} mm)"
        )
    thickness_outside = outside(spacing[:1], low[:1], high[:1])
    if thickness_outside:
        reasons.append(
            f"the scan's slices are {spacing[0]:.1f} mm thick; the training scans' were "
            f"{low[0]:.1f}-{high[0]:.1f} mm"
        )
    fov_low = np.asarray(statistics["fov_mm"]["min"], dtype=float)
    fov_high = np.asarray(statistics["fov_mm"]["max"], dtype=float)
    fov = np.asarray(summary.fov_mm)
    fov_outside = outside(fov[1:], fov_low[1:], fov_high[1:])
    if fov_outside:
        reasons.append(
            f"the scan's field of view ({fov[1]:.0f} x {fov[2]:.0f} mm) is unlike the training "
            f"scans' ({fov_low[1:].min():.0f}-{fov_high[1:].max():.0f} mm)"
        )
    histogram = statistics.get("histogram") or {}
    distance = limit = None
    if histogram.get("mean") and len(histogram["mean"]) == len(summary.histogram):
        distance = histogram_distance(summary.histogram, histogram["mean"])
        limit = float(histogram.get("max_distance", 0.0))
        if distance > limit:
            reasons.append(
                "the scan's brightness and contrast differ from every training scan "
                f"(histogram distance {distance:.2f}, training scans up to {limit:.2f})"
            )
    comparison = ScanComparison(
        True, pixel_outside, thickness_outside, fov_outside, distance, limit
    )
    return comparison, reasons


def _mm_pair(values: npt.NDArray[Any]) -> str:
    return " x ".join(f"{v:.2f}" for v in values) + " mm"


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class QualityReport:
    """The quality of one segmentation: verdict, reasons in words and the measurements.

    ``worst_slices`` and ``slice_uncertainty`` use the scan's own slice numbers (its first
    array axis) when that axis is the model's slice axis, else the model's; ``slice_axis``
    says which (``"scan"`` or ``"model"``).
    """

    verdict: str
    reasons: tuple[str, ...]
    risk: float
    features: dict[str, float]
    mask: MaskChecks
    uncertainty: Uncertainty
    scan: ScanComparison
    slice_uncertainty: dict[int, float]
    worst_slices: tuple[int, ...]
    slice_axis: str = "scan"
    calibration: str = ""

    @property
    def sentence(self) -> str:
        """One line for a person: ``Quality: check - reason; reason``."""
        reasons = "; ".join(self.reasons) if self.reasons else "nothing unusual found"
        return f"Quality: {self.verdict} - {reasons}"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "risk": round(self.risk, 4),
            "features": {k: round(v, 5) for k, v in self.features.items()},
            "mask": {
                "volume_cc": round(self.mask.volume_cc, 2),
                "extent_mm": [round(e, 1) for e in self.mask.extent_mm],
                "components_before_postprocessing": self.mask.components,
                "gap_slices": self.mask.gap_slices,
                "touches_edge_in_plane": self.mask.touches_edge_in_plane,
                "touches_end_slice": self.mask.touches_end_slice,
            },
            "uncertainty": {
                "expected_dice": round(self.uncertainty.expected_dice, 4),
                "boundary_entropy": round(self.uncertainty.boundary_entropy, 4),
                "flip_agreement": None
                if self.uncertainty.flip_agreement is None
                else round(self.uncertainty.flip_agreement, 4),
                "per_slice": {str(k): round(v, 4) for k, v in self.slice_uncertainty.items()},
                "slice_axis": self.slice_axis,
                "worst_slices": list(self.worst_slices),
            },
            "training_data": "unknown"
            if not self.scan.known
            else {
                "unlike_training": self.scan.unlike_training,
                "pixel_spacing_outside": self.scan.spacing_outside,
                "slice_thickness_outside": self.scan.thickness_outside,
                "field_of_view_outside": self.scan.fov_outside,
                "histogram_distance": None
                if self.scan.histogram_distance is None
                else round(self.scan.histogram_distance, 4),
                "histogram_limit": self.scan.histogram_limit,
            },
            "calibration": self.calibration,
        }


def score_features(mask: MaskChecks, uncertainty: Uncertainty) -> dict[str, float]:
    """The measurements a calibrated risk score may weigh (:data:`FEATURE_WORDS` names each).

    ``volume_outside`` is how far (natural log) the gland volume lies outside a prostate's
    usual range, 0 inside it.
    """
    low, high = PROSTATE_CC
    volume = max(mask.volume_cc, 1e-3)
    outside = max(0.0, math.log(low / volume), math.log(volume / high))
    return {
        "self_disagreement": 1.0 - uncertainty.expected_dice,
        "boundary_entropy": uncertainty.boundary_entropy,
        "volume_outside": outside,
        "extra_components": float(max(0, mask.components - 1)),
        "gap_slices": float(mask.gap_slices),
        "sphericity": mask.sphericity,
        "area_roughness": mask.area_roughness,
        "end_slice_fraction": mask.end_slice_fraction,
    }


#: Each measurement of :func:`score_features` in words, from its value and the value typical
#: of a good outline, for the reason that names what raised the risk.
FEATURE_WORDS: dict[str, Callable[[float, float], str]] = {
    "self_disagreement": lambda v, t: (
        f"the model's probabilities only partly agree with its outline (expected Dice "
        f"{1 - v:.2f}; good outlines {1 - t:.2f})"
    ),
    "boundary_entropy": lambda v, t: (
        f"the model is unsure along the border ({v:.0%}; good outlines {t:.0%})"
    ),
    "volume_outside": lambda v, t: "its volume is outside a prostate's usual 15-80 cc",
    "extra_components": lambda v, t: f"the model found {v + 1:.0f} separate regions",
    "gap_slices": lambda v, t: f"it skips {v:.0f} slice(s)",
    "sphericity": lambda v, t: (
        f"its 3D shape is irregular (roundness {v:.2f}; good outlines {t:.2f})"
    ),
    "area_roughness": lambda v, t: (
        f"its area jumps from slice to slice (unevenness {v:.2f}; good outlines {t:.2f})"
    ),
    "end_slice_fraction": lambda v, t: (
        f"{v:.0%} of it lies on the first or last slice (good outlines {t:.0%})"
    ),
}


def assess(
    labels: npt.NDArray[np.integer],
    probabilities: npt.NDArray[np.floating],
    geometry: Geometry,
    summary: ScanSummary,
    statistics: Mapping[str, Any] | None,
    components: int | None = None,
    flip_masks: Sequence[npt.NDArray[np.bool_]] | None = None,
    calibration: Calibration | None = None,
) -> QualityReport:
    """The quality report of ``labels`` (source grid, after post-processing), predicted from
    ``probabilities`` (model grid) of the scan summarised in ``summary``.

    ``statistics`` is the card's ``training_statistics`` (None: unknown); ``components`` the
    number of connected parts before the largest was kept; ``flip_masks`` the masks of the
    flip passes on the model grid (test-time augmentation).
    """
    mask = MaskChecks.measure(labels, geometry, components)
    uncertainty = Uncertainty.measure(probabilities, flip_masks)
    scan, scan_reasons = compare_with_training(summary, statistics)
    return judge(mask, uncertainty, scan, scan_reasons, geometry, calibration)


def judge(
    mask: MaskChecks,
    uncertainty: Uncertainty,
    scan: ScanComparison,
    scan_reasons: Sequence[str],
    geometry: Geometry,
    calibration: Calibration | None = None,
) -> QualityReport:
    """The verdict and its reasons from the measurements (:func:`assess` without measuring)."""
    calibration = calibration or default_calibration()
    features = score_features(mask, uncertainty)
    risk = calibration.risk(features)
    hard: list[str] = []  # each alone makes the segmentation unreliable
    soft: list[str] = []  # each alone asks for a look
    if mask.volume_cc == 0:
        hard.append("no prostate was found in this scan")
    else:
        hard, soft = _mask_reasons(mask)
    if risk >= calibration.ok_below:
        likely = "likely" if risk >= calibration.unreliable_from else "possibly"
        words = [
            FEATURE_WORDS[name](features[name], calibration.typical[name])
            for name in calibration.drivers(features)
        ]
        because = f": {' and '.join(words)}" if words else ""
        reason = f"the outline is {likely} poor (estimated {risk:.0%} chance){because}"
        (hard if risk >= calibration.unreliable_from else soft).append(reason)
    if uncertainty.flip_agreement is not None and uncertainty.flip_agreement < 0.9:
        soft.append(
            f"mirrored copies of the scan give different outlines (agreement "
            f"{uncertainty.flip_agreement:.0%})"
        )
    soft += scan_reasons
    verdict = UNRELIABLE if hard else CHECK if soft else OK
    slice_values, axis = _per_scan_slice(uncertainty.slice_entropy, geometry)
    known = {k: v for k, v in slice_values.items() if not math.isnan(v)}
    worst = tuple(sorted(known, key=lambda k: -known[k])[:WORST_SLICES])
    return QualityReport(
        verdict=verdict,
        reasons=tuple(hard + soft),
        risk=risk,
        features=features,
        mask=mask,
        uncertainty=uncertainty,
        scan=scan,
        slice_uncertainty=known,
        worst_slices=worst,
        slice_axis=axis,
        calibration=calibration.fitted_on,
    )


def _mask_reasons(mask: MaskChecks) -> tuple[list[str], list[str]]:
    """Plausibility reasons: (unreliable, check)."""
    hard, soft = [], []
    volume = mask.volume_cc
    if volume < IMPLAUSIBLE_CC[0]:
        hard.append(f"the predicted gland is {volume:.0f} cc, far smaller than a prostate")
    elif volume > IMPLAUSIBLE_CC[1]:
        hard.append(f"the predicted gland is {volume:.0f} cc, far larger than a prostate")
    elif volume < PROSTATE_CC[0]:
        soft.append(f"the predicted gland is {volume:.0f} cc, small for a prostate")
    elif volume > PROSTATE_CC[1]:
        soft.append(f"the predicted gland is {volume:.0f} cc, large for a prostate")
    names = ("head-to-foot", "front-to-back", "left-to-right")
    for name, extent in zip(names, mask.extent_mm, strict=True):
        if not PROSTATE_EXTENT_MM[0] <= extent <= PROSTATE_EXTENT_MM[1]:
            soft.append(f"the predicted gland measures {extent:.0f} mm {name}, unlike a prostate")
    if mask.components > 1:
        soft.append(
            f"the model found {mask.components} separate regions; only the largest was kept"
        )
    if mask.gap_slices:
        soft.append(
            f"the outline skips {mask.gap_slices} slice(s) inside the gland, which is one organ"
        )
    if mask.touches_edge_in_plane:
        soft.append("the predicted gland touches the edge of the image")
    if mask.touches_end_slice:
        soft.append(
            "the predicted gland reaches the first or last slice: the scan may not cover it all"
        )
    return hard, soft


def _per_scan_slice(
    values: npt.NDArray[np.floating], geometry: Geometry
) -> tuple[dict[int, float], str]:
    """Per-slice values of the model grid keyed by the scan's slice numbers (first array
    axis) when the model's slice axis is that axis, else by the model's."""
    index = np.arange(len(values), dtype=np.float64).reshape(-1, 1, 1)
    mapped = geometry._from_canonical(index)  # exact flips/transposes, as for the labels
    if mapped.shape == index.shape:
        order = mapped.ravel().astype(int)  # scan slice i holds model slice order[i]
        return {i: float(values[k]) for i, k in enumerate(order)}, "scan"
    return {k: float(v) for k, v in enumerate(values)}, "model"
