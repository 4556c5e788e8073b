"""The six scanner sites of the multi-site prostate benchmark, as acquisition protocols.

Each :class:`SiteProtocol` stands in for one site of the SAML / MS-Net release (see the site
table in the shared ``ARCHITECTURE.md``): field strength, receive coil, vendor, native voxel
size and the T2 turbo spin echo timing. Everything that makes one site's images differ from
another's is derived from these numbers, so the domain shift between sites is the real kind:
field of view and gland scale, contrast, coil shading, noise, slice thickness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

CoilKind = Literal["surface", "endorectal", "none"]

# The in-plane matrix at which each site's native spacing holds; FOV = native spacing x this.
NATIVE_MATRIX = 384

# Fat-to-noise ratio of a 1 mm^3 voxel at 1.5 T with a pelvic surface array and one average,
# the anchor of every site's SNR (see SiteProtocol.snr).
REFERENCE_SNR = 9.0

# Signal gain of each receive coil at the prostate, relative to a pelvic surface array:
# an endorectal loop sits millimetres from the gland, the body coil far away.
COIL_GAIN: dict[CoilKind, float] = {"surface": 1.0, "endorectal": 2.0, "none": 0.75}


@dataclass(frozen=True)
class VendorScale:
    """How a vendor stores magnitude images: data type, level of fat, and ceiling."""

    name: str
    stored_dtype: Literal["int16", "float32"]
    fat_level: float
    ceiling: float


VENDORS: dict[str, VendorScale] = {
    # 12-bit magnitude in unsigned words: fat around 450, near-coil peaks clipped at 4095.
    "Siemens": VendorScale("Siemens", "int16", 450.0, 4095.0),
    # GE scales T2 series up: fat around 1400, stored as signed 16 bit.
    "GE": VendorScale("GE", "int16", 1400.0, 32767.0),
    # Philips exports rescaled floating-point values with fat near 100.
    "Philips": VendorScale("Philips", "float32", 100.0, math.inf),
}


@dataclass(frozen=True)
class SiteProtocol:
    """How one site images the prostate (T2-weighted axial turbo spin echo).

    ``in_plane_spacing_mm`` and ``slice_thickness_mm`` are the published ranges; a case draws
    its values inside them. ``acquired_pixel_mm`` is the k-space resolution before the
    scanner's zero-fill interpolation, which sets blur and SNR. ``bias_correction`` is the
    exponent of the vendor's intensity normalisation (prescan normalise, CLEAR, SCIC/PURE):
    0 leaves the coil's shading, 1 would flatten it completely.
    """

    key: str
    name: str
    institution: str
    source_dataset: str
    field_strengths_t: tuple[float, ...]
    coil: CoilKind
    vendor: str
    in_plane_spacing_mm: tuple[float, float]
    slice_thickness_mm: tuple[float, float]
    acquired_pixel_mm: float
    echo_time_ms: float
    repetition_time_ms: float
    averages: int
    bias_correction: float

    @property
    def fov_mm(self) -> tuple[float, float]:
        """Range of the square in-plane field of view (native spacing x native matrix)."""
        low, high = self.in_plane_spacing_mm
        return low * NATIVE_MATRIX, high * NATIVE_MATRIX

    @property
    def vendor_scale(self) -> VendorScale:
        """The vendor's storage convention."""
        return VENDORS[self.vendor]

    def snr(self, field_t: float, slice_thickness_mm: float) -> float:
        """Fat signal over noise sigma at the gland, from physics: B0, voxel volume, coil.

        SNR grows about linearly with field strength, with acquired voxel volume and with the
        square root of the number of averages; the coil gain says how close the receiver is.
        """
        voxel_mm3 = self.acquired_pixel_mm**2 * slice_thickness_mm
        field_gain = (field_t / 1.5) ** 0.9
        return (
            REFERENCE_SNR * field_gain * voxel_mm3 * math.sqrt(self.averages) * COIL_GAIN[self.coil]
        )

    def summary(self) -> dict[str, object]:
        """The protocol as plain JSON-ready values, for the phantom's manifest."""
        nominal_thickness = sum(self.slice_thickness_mm) / 2
        return {
            "name": self.name,
            "institution": self.institution,
            "source_dataset": self.source_dataset,
            "field_strengths_t": list(self.field_strengths_t),
            "coil": self.coil,
            "vendor": self.vendor,
            "stored_dtype": self.vendor_scale.stored_dtype,
            "in_plane_spacing_mm_at_384": list(self.in_plane_spacing_mm),
            "fov_mm": [round(value, 1) for value in self.fov_mm],
            "slice_thickness_mm": list(self.slice_thickness_mm),
            "acquired_pixel_mm": self.acquired_pixel_mm,
            "echo_time_ms": self.echo_time_ms,
            "repetition_time_ms": self.repetition_time_ms,
            "averages": self.averages,
            "bias_correction": self.bias_correction,
            "snr_at_gland": {
                str(field): round(self.snr(field, nominal_thickness), 1)
                for field in self.field_strengths_t
            },
        }


SITES: dict[str, SiteProtocol] = {
    "A": SiteProtocol(
        key="A",
        name="RUNMC",
        institution="Radboud University Nijmegen Medical Centre",
        source_dataset="NCI-ISBI 2013",
        field_strengths_t=(3.0,),
        coil="surface",
        vendor="Siemens",
        in_plane_spacing_mm=(0.6, 0.625),
        slice_thickness_mm=(3.6, 4.0),
        acquired_pixel_mm=0.6,
        echo_time_ms=104.0,
        repetition_time_ms=5600.0,
        averages=2,
        bias_correction=0.4,
    ),
    "B": SiteProtocol(
        key="B",
        name="BMC",
        institution="Boston Medical Center",
        source_dataset="NCI-ISBI 2013",
        field_strengths_t=(1.5,),
        coil="endorectal",
        vendor="Philips",
        in_plane_spacing_mm=(0.4, 0.4),
        slice_thickness_mm=(3.0, 3.0),
        acquired_pixel_mm=0.6,
        echo_time_ms=120.0,
        repetition_time_ms=4000.0,
        averages=1,
        bias_correction=0.45,
    ),
    "C": SiteProtocol(
        key="C",
        name="HCRUDB",
        institution="Hospital Center Regional University of Dijon-Burgundy",
        source_dataset="I2CVB",
        field_strengths_t=(3.0,),
        coil="none",
        vendor="Siemens",
        in_plane_spacing_mm=(0.67, 0.79),
        slice_thickness_mm=(1.25, 1.25),
        acquired_pixel_mm=0.75,
        echo_time_ms=95.0,
        repetition_time_ms=6000.0,
        averages=2,
        bias_correction=0.0,
    ),
    "D": SiteProtocol(
        key="D",
        name="UCL",
        institution="University College London",
        source_dataset="PROMISE12",
        field_strengths_t=(1.5, 3.0),
        coil="none",
        vendor="Siemens",
        in_plane_spacing_mm=(0.325, 0.625),
        slice_thickness_mm=(3.0, 3.6),
        acquired_pixel_mm=0.6,
        echo_time_ms=100.0,
        repetition_time_ms=5000.0,
        averages=2,
        bias_correction=0.0,
    ),
    "E": SiteProtocol(
        key="E",
        name="BIDMC",
        institution="Beth Israel Deaconess Medical Center",
        source_dataset="PROMISE12",
        field_strengths_t=(3.0,),
        coil="endorectal",
        vendor="GE",
        in_plane_spacing_mm=(0.25, 0.25),
        slice_thickness_mm=(2.2, 3.0),
        acquired_pixel_mm=0.5,
        echo_time_ms=110.0,
        repetition_time_ms=4200.0,
        averages=2,
        bias_correction=0.6,
    ),
    "F": SiteProtocol(
        key="F",
        name="HK",
        institution="Haukeland University Hospital",
        source_dataset="PROMISE12",
        field_strengths_t=(1.5,),
        coil="endorectal",
        vendor="Siemens",
        in_plane_spacing_mm=(0.625, 0.625),
        slice_thickness_mm=(3.6, 3.6),
        acquired_pixel_mm=0.625,
        echo_time_ms=98.0,
        repetition_time_ms=4500.0,
        averages=1,
        bias_correction=0.1,
    ),
}
