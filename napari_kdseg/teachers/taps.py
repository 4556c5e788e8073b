"""TAPS, a 3D prostate model, as a teacher: its own pipeline rebuilt on ONNX Runtime.

TAPS is the PyPI package ``lavlab-taps`` 1.1.2 (MIT licence): a MONAI SegResNetDS trained on
T2-weighted prostate MRI, shipped as ``taps/resources/model_v1.onnx``. Its pipeline
(``taps/inference.py``, function ``segment``) needs PyTorch and MONAI; this module follows
it step by step with numpy, scipy and ONNX Runtime only (the steps are in
:mod:`napari_kdseg.teachers._taps_pipeline`), and reads the model file from the installed
package without importing it. Nothing here imports Keras, TensorFlow, PyTorch or Qt.

Install the model with ``pip install --no-deps lavlab-taps==1.1.2`` (``--no-deps``: its
declared PyTorch, MONAI and onnxruntime-gpu are not needed here).
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.special import expit

from napari_kdseg.data.volume import Volume
from napari_kdseg.inference.onnx_runtime import CPU, open_session, session_options
from napari_kdseg.teachers import TAPS_DISTRIBUTION, TAPS_VERSION
from napari_kdseg.teachers import _taps_pipeline as steps

DISTRIBUTION = TAPS_DISTRIBUTION
VERSION = TAPS_VERSION
MODEL_FILE = "taps/resources/model_v1.onnx"
INSTALL = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"

# The constants of taps/inference.py (lavlab-taps 1.1.2), and the MONAI arguments it passes.
VOXEL_SPACING = (0.8, 0.8, 3.0)  # mm, RAS axes (Spacingd pixdim)
ROI_SIZE = (128, 128, 32)  # sliding-window size in voxels of that grid
OVERLAP = 0.5  # sliding_window_inference(overlap=0.5, mode="gaussian")
SIGMA_SCALE = 0.125  # MONAI's default Gaussian blending width, a fraction of the ROI
CROP_MARGIN = 5  # CropForegroundd(margin=5), voxels
LOGIT_SIGMA = 2.5  # DEFAULT_SIGMA: Gaussian blur of the logits, voxels of the 0.8 mm grid
THRESHOLD = 0.55  # DEFAULT_PROBABILITY_THRESHOLD, on the sigmoid
MIN_VOLUME_CC, MAX_VOLUME_CC = 15.0, 80.0  # MIN/MAX_PROSTATE_VOLUME_CC
MIN_EXTENT_MM, MAX_EXTENT_MM = 10.0, 150.0  # MIN/MAX_GEOMETRY_EXTENT_MM


class TapsNotInstalledError(ImportError):
    """The ``lavlab-taps`` package (which carries the model file) is not installed."""


def taps_model_path() -> Path:
    """Where the installed ``lavlab-taps`` keeps ``model_v1.onnx``, found through the
    package's metadata (importing ``taps`` would import PyTorch and MONAI)."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise TapsNotInstalledError(
            f"the TAPS model is not installed; install it with `{INSTALL}`"
        ) from error
    path = Path(str(distribution.locate_file(MODEL_FILE)))
    if not path.is_file():
        found = distribution.version
        raise TapsNotInstalledError(
            f"{DISTRIBUTION} {found} is installed but has no {MODEL_FILE}; "
            f"reinstall it with `{INSTALL}`"
        )
    return path


@dataclass(frozen=True)
class TapsChecks:
    """TAPS's plausibility checks (``_run_qc`` and its ``_warn_*`` helpers), measured as TAPS
    measures them: on the thresholded mask before the largest component is kept.

    ``extent_mm`` is in the project's array order (slice, row, column); TAPS flags any
    extent outside 10-150 mm. ``slices_with_several_parts`` counts slices (along the scan's
    slice axis) holding more than one 8-connected region, which TAPS writes a separate
    "cleaned" mask for. ``abnormal`` is TAPS's verdict (it renames its output
    ``*_abnormal``); an empty mask, which TAPS refuses with ``BlankMaskError``, is
    reported here as ``empty`` instead.
    """

    volume_cc: float
    extent_mm: tuple[float, float, float]
    components: int
    touches_border: bool
    slice_gaps: bool
    isolated_slices: bool
    holes: int
    slices_with_several_parts: int
    empty: bool = False
    problems: tuple[str, ...] = field(default=())

    @property
    def abnormal(self) -> bool:
        """Whether TAPS would call this mask abnormal."""
        return bool(self.problems)

    @classmethod
    def measure(cls, mask: npt.NDArray[np.generic], affine: npt.NDArray[np.float64]) -> TapsChecks:
        """The checks of a binary ``mask`` in file order ``(i, j, k)`` on ``affine``."""
        mask = np.asarray(mask) > 0
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        volume_cc = float(np.count_nonzero(mask)) * abs(float(np.linalg.det(affine[:3, :3]))) / 1000
        occupied = np.argwhere(mask)
        if occupied.size == 0:
            return cls(0.0, (0.0, 0.0, 0.0), 0, False, False, False, 0, 0, True, ("empty mask",))
        extent = (occupied.max(axis=0) - occupied.min(axis=0) + 1) * spacing
        touches = any(np.take(mask, index, axis).any() for axis in range(3) for index in (0, -1))
        slices = np.flatnonzero(mask.any(axis=(0, 1)))
        gaps = np.diff(slices)
        runs = np.split(slices, np.flatnonzero(gaps > 1) + 1) if slices.size >= 2 else []
        has_gap = bool(np.any(gaps > 1))
        isolated = any(run.size == 1 for run in runs)
        holes = int(ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)[1])
        components = int(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])
        several = sum(
            ndimage.label(mask[:, :, k], structure=np.ones((3, 3)))[1] > 1
            for k in range(mask.shape[2])
        )
        problems = []
        if np.any((extent < MIN_EXTENT_MM) | (extent > MAX_EXTENT_MM)):
            problems.append("extent outside 10-150 mm")
        if touches:
            problems.append("touches the image border")
        if has_gap:
            problems.append("gaps between occupied slices")
        if isolated:
            problems.append("isolated occupied slices")
        if holes:
            problems.append(f"{holes} enclosed hole(s)")
        if not MIN_VOLUME_CC <= volume_cc <= MAX_VOLUME_CC:
            problems.append(f"volume {volume_cc:.1f} cc outside 15-80 cc")
        if components > 1:
            problems.append(f"{components} disconnected 3D components")
        if several:
            problems.append(f"several 2D components in {several} slice(s)")
        return cls(
            volume_cc=volume_cc,
            extent_mm=(float(extent[2]), float(extent[1]), float(extent[0])),
            components=components,
            touches_border=bool(touches),
            slice_gaps=has_gap,
            isolated_slices=isolated,
            holes=holes,
            slices_with_several_parts=int(several),
            problems=tuple(problems),
        )


@dataclass(frozen=True)
class TapsPrediction:
    """TAPS's output on the source grid of a scan, in the scan's array order ``(k, j, i)``.

    ``probability`` is the sigmoid of the blurred, resampled logits (float32); ``mask`` is
    ``probability > 0.55`` reduced to its largest 3D component (uint8), the mask TAPS
    writes; ``checks`` are TAPS's plausibility checks. ``covered`` marks the voxels TAPS's
    foreground crop reached: beyond it its logits are 0 (probability 0.5), which says "not
    looked at", not "unsure", and its mask is empty there.
    """

    probability: npt.NDArray[np.float32]
    mask: npt.NDArray[np.uint8]
    checks: TapsChecks
    windows: int
    seconds: float
    covered: npt.NDArray[np.bool_] | None = None

    @property
    def teacher_probability(self) -> npt.NDArray[np.float32]:
        """``probability`` where TAPS looked, 0 (background, as its mask) beyond its crop:
        what a student learns from."""
        if self.covered is None:
            return self.probability
        return np.where(self.covered, self.probability, np.float32(0)).astype(np.float32)


class TapsTeacher:
    """The TAPS model in ONNX Runtime with TAPS's pre- and post-processing.

    ``threads`` sets ONNX Runtime's intra-op threads (None: its default, one per core);
    ``providers`` defaults to the CPU. One window of 128 x 128 x 32 takes a few seconds on
    a CPU core, and a scan needs about 4 to 12 of them.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else taps_model_path()
        self.session = open_session(
            self.model_path, session_options(threads), providers=list(providers or [CPU])
        )
        self.input_name = self.session.get_inputs()[0].name

    def predict_window(self, window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Logits of one ``ROI_SIZE`` window (RAS axes, z-scored intensities)."""
        batch = np.ascontiguousarray(window, dtype=np.float32)[None, None]
        return np.asarray(self.session.run(None, {self.input_name: batch})[0][0, 0], np.float32)

    def __call__(
        self, volume: Volume, progress: Callable[[int, int], None] | None = None
    ) -> TapsPrediction:
        """Segment one scan (any orientation) the way ``taps segment`` does
        (:func:`run_taps` with this model); ``progress(done, total)`` follows the windows."""
        return run_taps(volume, self.predict_window, progress)


def run_taps(
    volume: Volume,
    predict_window: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    progress: Callable[[int, int], None] | None = None,
) -> TapsPrediction:
    """TAPS's pipeline (``segment`` in ``taps/inference.py``) around ``predict_window``,
    which maps one z-scored ``ROI_SIZE`` window on RAS axes to its logits.

    ``progress(done, total)`` is called after each sliding window.
    """
    began = time.perf_counter()
    data = volume.file_order_array.astype(np.float32, copy=False)
    affine = volume.affine
    # 1. Orientationd(axcodes="RAS"): flips and transposes only.
    ras, ras_affine, ornt = steps.to_ras(data, affine)
    # 2. Spacingd(pixdim=(0.8, 0.8, 3.0), mode="bilinear"): trilinear, border padding.
    grid_shape, grid_affine = steps.target_grid(ras.shape, ras_affine, VOXEL_SPACING)
    resampled = steps.resample_linear(ras, ras_affine, grid_affine, grid_shape)
    # 3. NormalizeIntensityd(nonzero=True): zero voxels (air outside the scan) stay zero.
    normalised = steps.nonzero_zscore(resampled)
    # 4. CropForegroundd(margin=5) on the voxels above the mean.
    box = steps.foreground_box(normalised, CROP_MARGIN)
    if any(b <= a for a, b in zip(*box, strict=True)):
        logits = np.zeros(grid_shape, dtype=np.float32)  # nothing above the mean
        inside = np.zeros(grid_shape, dtype=np.float32)
        windows = 0
    else:
        cropped = steps.crop_box(normalised, box)
        windows = steps.window_count(cropped.shape, ROI_SIZE, OVERLAP)
        # 5. sliding_window_inference(roi 128 x 128 x 32, overlap 0.5, gaussian blending).
        raw = steps.sliding_window(
            cropped, ROI_SIZE, predict_window, OVERLAP, SIGMA_SCALE, progress
        )
        # 6. Gaussian blur of the logits, in the crop (edges replicated), before inverting.
        blurred = ndimage.gaussian_filter(raw, sigma=LOGIT_SIGMA, mode="nearest")
        # 7. Invertd: outside the crop box the logits come back as 0 (probability 0.5).
        logits = steps.paste_box(blurred, box, grid_shape)
        inside = steps.paste_box(np.ones_like(blurred), box, grid_shape)
    # 7. (cont.) resample back bilinearly to the reoriented source grid, then unflip.
    back = steps.resample_linear(logits, grid_affine, ras_affine, ras.shape)
    source_logits = steps.from_ras(back, ornt)
    # where the crop reached, on the source grid (not TAPS's: for the maps students learn from)
    covered = steps.from_ras(
        steps.resample_linear(inside, grid_affine, ras_affine, ras.shape), ornt
    ) > np.float32(0.5)
    # 8. sigmoid, threshold 0.55, then the largest 26-connected component.
    probability = expit(source_logits.astype(np.float32)).astype(np.float32)
    thresholded = (probability > np.float32(THRESHOLD)).astype(np.uint8)
    checks = TapsChecks.measure(thresholded, affine)
    mask, _ = steps.largest_component(thresholded)
    return TapsPrediction(
        probability=np.ascontiguousarray(probability.transpose(2, 1, 0)),
        mask=np.ascontiguousarray(mask.transpose(2, 1, 0)),
        checks=checks,
        windows=windows,
        seconds=time.perf_counter() - began,
        covered=np.ascontiguousarray(covered.transpose(2, 1, 0)),
    )
