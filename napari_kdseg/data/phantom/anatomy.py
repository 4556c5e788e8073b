"""The pelvis of one synthetic patient, as tissues laid out in physical millimetres.

Patient space is DICOM's LPS: ``x`` grows towards the patient's left, ``y`` towards posterior
and ``z`` towards superior, with the origin near the centre of the prostate. Every structure
is a solid with an approximate signed distance (negative inside, in mm), so a wall of a given
thickness is simply "distance between -t and 0" and partial volume can be sampled anywhere.

A :class:`Pelvis` is a list of :class:`Layer` s painted in order (later layers cover earlier
ones) plus the gland, whose zones are painted only inside its capsule. The label is the whole
gland; everything else, including the seminal vesicles and the venous plexus that look like
the gland on T2, is background.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import IntEnum
from functools import cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Vector = npt.NDArray[np.float64]


def _direction_monomials(dimensions: int) -> tuple[tuple[int, ...], ...]:
    """Exponents of the monomials of a unit direction that shape an outline's lobes.

    Degrees 2-3 in 3D and 2-4 in 2D span the low-order spherical (circular) harmonics: smooth
    bulges and dents, no trigonometry needed. Degree 1 would only shift the shape.
    """
    degrees = (2, 3) if dimensions == 3 else (2, 3, 4)
    if dimensions == 2:
        return tuple((i, degree - i) for degree in degrees for i in range(degree + 1))
    return tuple(
        (i, j, degree - i - j)
        for degree in degrees
        for i in range(degree + 1)
        for j in range(degree + 1 - i)
    )


def _random_lobes(rng: np.random.Generator, amplitude: float, dimensions: int) -> tuple[float, ...]:
    """Random lobe coefficients (relative bulge ``amplitude``) for a 2D or 3D outline."""
    count = len(_direction_monomials(dimensions))
    return tuple(float(value) for value in rng.normal(0.0, amplitude, count))


class Tissue(IntEnum):
    """Tissue classes of the phantom; the value is the index stored in tissue maps."""

    AIR = 0
    FAT = 1
    SKIN = 2
    MUSCLE = 3
    CORTICAL_BONE = 4
    YELLOW_MARROW = 5
    MIXED_MARROW = 6
    CARTILAGE = 7
    FLOWING_BLOOD = 8
    VENOUS_PLEXUS = 9
    URINE = 10
    BLADDER_WALL = 11
    SEMINAL_VESICLE = 12
    RECTAL_WALL = 13
    RECTAL_CONTENT = 14
    COIL_BALLOON = 15
    BALLOON_MEMBRANE = 16
    PROSTATE_CAPSULE = 17
    PERIPHERAL_ZONE = 18
    CENTRAL_GLAND = 19
    FIBROMUSCULAR_STROMA = 20
    URETHRA = 21


@dataclass(frozen=True)
class TissueProperties:
    """MR properties of a tissue and the texture it shows on T2-weighted turbo spin echo.

    Relaxation times are given at 1.5 T and 3 T (T1 lengthens and T2 shortens with field);
    the T2 of fat is its apparent value on turbo spin echo, where fat stays bright. Texture
    amplitudes are relative signal changes: ``fine`` is ~1.5 mm graininess or nodularity,
    ``coarse`` ~8 mm slow variation, ``strands`` thin curvilinear structures (fibrous septa in
    fat, fatty streaks in muscle, ducts in the peripheral zone); negative strands are darker.
    """

    proton_density: float
    t1_ms: tuple[float, float]
    t2_ms: tuple[float, float]
    fine: float = 0.0
    coarse: float = 0.0
    strands: float = 0.0

    def relaxation_ms(self, field_t: float) -> tuple[float, float]:
        """T1 and T2 at ``field_t`` tesla, interpolated between the 1.5 T and 3 T values."""
        weight = min(max((field_t - 1.5) / 1.5, 0.0), 1.0)
        t1 = self.t1_ms[0] + weight * (self.t1_ms[1] - self.t1_ms[0])
        t2 = self.t2_ms[0] + weight * (self.t2_ms[1] - self.t2_ms[0])
        return t1, t2


# Literature-scale values (PD relative to water; T1, T2 in ms at 1.5 T and 3 T).
TISSUE_PROPERTIES: dict[Tissue, TissueProperties] = {
    Tissue.AIR: TissueProperties(0.0, (1000, 1000), (1, 1)),
    Tissue.FAT: TissueProperties(0.95, (260, 370), (165, 150), 0.04, 0.06, -0.3),
    Tissue.SKIN: TissueProperties(0.7, (700, 900), (55, 50), 0.05),
    Tissue.MUSCLE: TissueProperties(0.8, (900, 1400), (50, 45), 0.12, 0.08, 1.6),
    Tissue.CORTICAL_BONE: TissueProperties(0.05, (1000, 1000), (5, 5)),
    Tissue.YELLOW_MARROW: TissueProperties(0.85, (300, 400), (130, 120), 0.18, 0.05, -0.35),
    Tissue.MIXED_MARROW: TissueProperties(0.8, (500, 650), (75, 70), 0.2, 0.08, -0.3),
    Tissue.CARTILAGE: TissueProperties(0.6, (1000, 1200), (35, 30)),
    Tissue.FLOWING_BLOOD: TissueProperties(0.05, (1200, 1600), (50, 50)),
    Tissue.VENOUS_PLEXUS: TissueProperties(0.85, (1400, 1800), (200, 180), 0.15, 0.1, -0.3),
    Tissue.URINE: TissueProperties(1.0, (3000, 3500), (1500, 1200), 0.01),
    Tissue.BLADDER_WALL: TissueProperties(0.75, (1000, 1300), (55, 50), 0.05),
    Tissue.SEMINAL_VESICLE: TissueProperties(0.95, (2000, 2500), (300, 260), 0.2, 0.05, -0.7),
    Tissue.RECTAL_WALL: TissueProperties(0.75, (1000, 1300), (60, 55), 0.1),
    Tissue.RECTAL_CONTENT: TissueProperties(0.55, (800, 1000), (90, 80), 0.55, 0.3, 0.8),
    Tissue.COIL_BALLOON: TissueProperties(0.02, (1000, 1000), (20, 20)),
    Tissue.BALLOON_MEMBRANE: TissueProperties(0.35, (500, 600), (80, 70)),
    Tissue.PROSTATE_CAPSULE: TissueProperties(0.7, (900, 1200), (55, 50), 0.05),
    Tissue.PERIPHERAL_ZONE: TissueProperties(0.8, (1500, 2000), (165, 140), 0.1, 0.1, -0.3),
    Tissue.CENTRAL_GLAND: TissueProperties(0.85, (1300, 1800), (90, 80), 0.28, 0.12, -0.25),
    Tissue.FIBROMUSCULAR_STROMA: TissueProperties(0.75, (1000, 1300), (65, 58), 0.08),
    Tissue.URETHRA: TissueProperties(0.8, (1200, 1500), (120, 110), 0.05),
}


class Shape(ABC):
    """A solid in patient space with an approximate signed distance to its surface."""

    @abstractmethod
    def bounds(self) -> tuple[Vector, Vector]:
        """Lower and upper corner (x, y, z) of a box that contains the solid, in mm."""

    @abstractmethod
    def distance(self, x: FloatArray, y: FloatArray, z: FloatArray) -> FloatArray:
        """Signed distance in mm (negative inside) at broadcastable coordinate arrays.

        Exact for spheres and circular cylinders, a radial approximation otherwise; a shape
        that does not depend on ``z`` returns an array without a ``z`` extent, so extruded
        structures cost one plane instead of a volume.
        """


def _radial_distance(
    coordinates: tuple[FloatArray, ...],
    semi_axes: tuple[float, ...],
    lobes: tuple[float, ...] = (),
    rho: FloatArray | None = None,
) -> FloatArray:
    """Distance to an ellipse(oid)'s surface, measured along the ray from its centre.

    ``coordinates`` are relative to the centre in the shape's own axes. With ``rho`` the
    normalised radius, ``bulge`` the outline's radius in that direction (1 plus the lobes)
    and ``radial`` the centre-to-surface length along the ray, the distance is
    ``(rho - bulge) * radial``: cheap, exact for circles, and close enough near the surface
    for walls a few millimetres thick. ``rho`` may be given when the caller warped it.
    """
    normalised = [
        value / np.float32(semi) for value, semi in zip(coordinates, semi_axes, strict=True)
    ]
    if rho is None:
        rho = np.sqrt(sum(value * value for value in normalised))
    inverse = 1 / np.maximum(rho, np.float32(1e-6))
    directions = [value * inverse for value in normalised]
    radial = np.sqrt(
        sum((d * np.float32(semi)) ** 2 for d, semi in zip(directions, semi_axes, strict=True))
    )
    # At the very centre the ray is undefined; any length between the axes is valid there.
    radial = np.clip(radial, min(semi_axes), max(semi_axes))
    bulge: FloatArray | np.float32 = np.float32(1.0)
    if lobes:
        exponents = _direction_monomials(len(directions))
        bulge = 1 + _horner(dict(zip(exponents, lobes, strict=True)), directions)
    return (rho - bulge) * radial


def _horner(
    coefficients: dict[tuple[int, ...], float], variables: list[FloatArray]
) -> FloatArray | np.float32:
    """Polynomial ``sum c * prod(variables ** exponents)`` evaluated by nested Horner steps.

    Two array operations per monomial instead of a product of powers: the lobes are the
    costliest part of the rasterisation of large organs at fine spacing.
    """
    if not variables:
        return np.float32(coefficients.get((), 0.0))
    first, rest = variables[0], variables[1:]
    result: FloatArray | np.float32 | None = None
    for power in range(max(exponent[0] for exponent in coefficients), -1, -1):
        sub = {exponent[1:]: c for exponent, c in coefficients.items() if exponent[0] == power}
        inner = _horner(sub, rest) if sub else None
        if result is None:
            result = inner
        elif inner is None:
            result = first * result
        else:
            result = inner + first * result
    return result if result is not None else np.float32(0.0)


@cache
def _max_bulge(lobes: tuple[float, ...], dimensions: int) -> float:
    """Upper bound of the relative outward bulge that ``lobes`` give an outline.

    Each degree's part is maximised in absolute value over a dense set of unit directions
    (parts scale with ``|d| ** degree``, so this also bounds directions shorter than one),
    plus a small margin for the directions between the samples. Much tighter than summing
    the coefficients, which keeps bounding boxes, and so rasterising, small.
    """
    if not lobes:
        return 0.0
    if dimensions == 2:
        angle = np.linspace(0.0, 2 * np.pi, 720, endpoint=False)
        directions = [np.cos(angle), np.sin(angle)]
    else:
        index = np.arange(4000) + 0.5
        polar = np.arccos(1 - 2 * index / 4000)
        azimuth = np.pi * (1 + 5**0.5) * index
        directions = [
            np.cos(azimuth) * np.sin(polar),
            np.sin(azimuth) * np.sin(polar),
            np.cos(polar),
        ]
    exponents = _direction_monomials(dimensions)
    total = np.zeros_like(directions[0])
    for degree in sorted({sum(exponent) for exponent in exponents}):
        part = {e: c for e, c in zip(exponents, lobes, strict=True) if sum(e) == degree}
        total += np.abs(_horner(part, directions))
    return float(total.max()) + 0.01


def _rotation_about(axis: str, angle: float) -> Vector:
    """Rotation matrix by ``angle`` radians about patient axis ``"x"``, ``"y"`` or ``"z"``."""
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _rotated_half_extent(rotation: Vector, semi_axes: Vector) -> Vector:
    """Half size of the axis-aligned box around an ellipsoid with ``rotation``'s columns as axes."""
    return np.sqrt(((rotation * semi_axes[None, :]) ** 2).sum(axis=1))


@dataclass(frozen=True)
class Ellipsoid(Shape):
    """An ellipsoid; ``rotation`` has its own axes as columns (None: aligned with patient axes).

    ``lobes`` (see :func:`_random_lobes`) bulge and dent the outline so organs are not perfect
    ellipsoids.
    """

    center: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    rotation: Vector | None = None
    lobes: tuple[float, ...] = ()

    def bounds(self) -> tuple[Vector, Vector]:
        semi = np.asarray(self.semi_axes, dtype=np.float64) * (1.0 + _max_bulge(self.lobes, 3))
        half = semi if self.rotation is None else _rotated_half_extent(self.rotation, semi)
        center = np.asarray(self.center, dtype=np.float64)
        return center - half, center + half

    def distance(self, x: FloatArray, y: FloatArray, z: FloatArray) -> FloatArray:
        local = _to_local(x, y, z, self.center, self.rotation)
        return _radial_distance(local, self.semi_axes, self.lobes)


@dataclass(frozen=True)
class EllipticCylinder(Shape):
    """An elliptic cylinder along ``z`` between ``z_range``, its axes turned by ``angle`` rad.

    ``bend`` moves the centre posteriorly by ``bend * (z - z_mid)**2`` mm, for a rectum that
    follows the sacral curve; ``lobes`` make the cross-section irregular. The flat ends are
    not part of the distance: rasterising clips to :meth:`bounds`, which is exactly the cut.
    """

    center: tuple[float, float]
    semi_axes: tuple[float, float]
    z_range: tuple[float, float]
    angle: float = 0.0
    bend: float = 0.0
    lobes: tuple[float, ...] = ()

    def bounds(self) -> tuple[Vector, Vector]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        a, b = (semi * (1.0 + _max_bulge(self.lobes, 2)) for semi in self.semi_axes)
        half_x = math.hypot(a * c, b * s)
        half_y = math.hypot(a * s, b * c)
        z_low, z_high = self.z_range
        sag = self.bend * ((z_high - z_low) / 2) ** 2
        lower = (self.center[0] - half_x, self.center[1] - half_y + min(sag, 0.0), z_low)
        upper = (self.center[0] + half_x, self.center[1] + half_y + max(sag, 0.0), z_high)
        return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)

    def distance(self, x: FloatArray, y: FloatArray, z: FloatArray) -> FloatArray:
        dx = x - np.float32(self.center[0])
        dy = y - np.float32(self.center[1])
        if self.bend:
            z_mid = (self.z_range[0] + self.z_range[1]) / 2
            dy = dy - np.float32(self.bend) * (z - np.float32(z_mid)) ** 2
        if self.angle:
            c, s = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
            dx, dy = c * dx + s * dy, -s * dx + c * dy
        return _radial_distance((dx, dy), self.semi_axes, self.lobes)


@dataclass(frozen=True)
class HalfSpace(Shape):
    """The points whose projection on ``normal`` (a unit vector) is at most ``offset``."""

    normal: tuple[float, float, float]
    offset: float

    def bounds(self) -> tuple[Vector, Vector]:
        return np.full(3, -np.inf), np.full(3, np.inf)

    def distance(self, x: FloatArray, y: FloatArray, z: FloatArray) -> FloatArray:
        nx, ny, nz = (np.float32(value) for value in self.normal)
        total = np.float32(-self.offset)
        if nx:
            total = total + nx * x
        if ny:
            total = total + ny * y
        if nz:
            total = total + nz * z
        return np.asarray(total, dtype=np.float32)


@dataclass(frozen=True)
class Intersection(Shape):
    """The points inside every one of ``parts``."""

    parts: tuple[Shape, ...]

    def bounds(self) -> tuple[Vector, Vector]:
        corners = [part.bounds() for part in self.parts]
        lower = np.max([low for low, _ in corners], axis=0)
        upper = np.min([high for _, high in corners], axis=0)
        return lower, upper

    def distance(self, x: FloatArray, y: FloatArray, z: FloatArray) -> FloatArray:
        result = self.parts[0].distance(x, y, z)
        for part in self.parts[1:]:
            result = np.maximum(result, part.distance(x, y, z))
        return result


@dataclass(frozen=True)
class Difference(Shape):
    """The points inside ``solid`` and outside ``cut``."""

    solid: Shape
    cut: Shape

    def bounds(self) -> tuple[Vector, Vector]:
        return self.solid.bounds()

    def distance(self, x: FloatArray, y: FloatArray, z: FloatArray) -> FloatArray:
        return np.maximum(self.solid.distance(x, y, z), -self.cut.distance(x, y, z))


@dataclass(frozen=True)
class GlandShape(Shape):
    """The prostate: a tilted ellipsoid warped into the chestnut shape of a real gland.

    The warps follow anatomy: the apex (inferior) is narrower than the base, the anterior
    side narrower than the posterior, the posterior surface flat against the rectum, and a
    random sum of degree-2/3 direction monomials adds smooth lobes and dents so no two glands
    share an outline. ``tilt`` turns the long axis anteriorly going up, as in most men.
    """

    center: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    tilt: float
    apex_taper: float
    anterior_narrowing: float
    posterior_flattening: float
    lobes: tuple[float, ...]

    def bounds(self) -> tuple[Vector, Vector]:
        semi = np.asarray(self.semi_axes, dtype=np.float64) * (1.0 + _max_bulge(self.lobes, 3))
        half = _rotated_half_extent(_rotation_about("x", self.tilt), semi)
        center = np.asarray(self.center, dtype=np.float64)
        return center - half, center + half

    def distance(self, x: FloatArray, y: FloatArray, z: FloatArray) -> FloatArray:
        u, v, w = _to_local(x, y, z, self.center, _rotation_about("x", self.tilt))
        a, b, c = (np.float32(s) for s in self.semi_axes)
        nu, nv, nw = u / a, v / b, w / c
        # Narrower towards the apex (w < 0) and anteriorly (v < 0): scale those coordinates up.
        nu = nu * (1 + np.float32(self.apex_taper) * np.clip(-nw, 0, 1))
        nu = nu * (1 + np.float32(self.anterior_narrowing) * np.clip(-nv, 0, 1))
        # A flat posterior face: a higher power of v behind the centre (superellipse).
        posterior = np.maximum(nv, 0)
        nv2 = np.where(
            nv > 0, posterior**2 + np.float32(self.posterior_flattening) * posterior**4, nv * nv
        )
        rho = np.sqrt(nu * nu + nv2 + nw * nw)
        return _radial_distance((nu * a, v, w), self.semi_axes, self.lobes, rho=rho)


def _to_local(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    center: tuple[float, float, float],
    rotation: Vector | None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Coordinates relative to ``center`` in the frame whose axes are ``rotation``'s columns."""
    dx = x - np.float32(center[0])
    dy = y - np.float32(center[1])
    dz = z - np.float32(center[2])
    if rotation is None:
        return dx, dy, dz
    r = rotation.astype(np.float32)
    u = r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz
    v = r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz
    w = r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz
    return u, v, w


def _rod(
    start: tuple[float, float, float], end: tuple[float, float, float], radii: tuple[float, float]
) -> Ellipsoid:
    """An ellipsoid spanning ``start`` to ``end`` (bone rami, femoral neck, seminal vesicles).

    ``radii`` are the half-widths across the rod: the first lies in the axial plane where
    possible, the second completes the frame.
    """
    p0, p1 = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    axis = p1 - p0
    length = float(np.linalg.norm(axis))
    along = axis / length
    helper = np.array([0.0, 0.0, 1.0]) if abs(along[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    across = np.cross(helper, along)
    across /= np.linalg.norm(across)
    third = np.cross(along, across)
    middle = (p0 + p1) / 2
    center = (float(middle[0]), float(middle[1]), float(middle[2]))
    rotation = np.stack([along, across, third], axis=1)
    return Ellipsoid(center, (length / 2, radii[0], radii[1]), rotation)


@dataclass(frozen=True)
class Layer:
    """A shape and the tissues painted into it: ``(depth, tissue)`` pairs, outermost first.

    Each pair paints ``tissue`` where the signed distance is below ``depth`` (0 or negative),
    so ``((0, wall), (-3, lumen))`` is a 3 mm wall around a lumen.
    """

    shape: Shape
    paints: tuple[tuple[float, Tissue], ...]


@dataclass(frozen=True)
class Balloon:
    """The endorectal coil's balloon: its receive loop sits on the balloon's axis."""

    center: tuple[float, float, float]
    radius: float
    half_length: float


@dataclass(frozen=True)
class SoftTissueWarp:
    """A smooth in-plane displacement of the whole pelvis, so no outline stays a clean ellipse.

    The structures are built in a template space; the tissue seen at patient point ``p`` is
    the template's tissue at ``p + d(p)``, with ``d`` a sum of a few long plane waves. It is
    constant through ``z``, so an extruded structure still costs one plane to rasterise.
    """

    wave_vectors: tuple[tuple[float, float], ...]
    phases: tuple[float, ...]
    amplitudes: tuple[tuple[float, float], ...]

    @property
    def max_displacement(self) -> float:
        """Upper bound of the displacement's length in mm."""
        return float(sum(math.hypot(*amplitude) for amplitude in self.amplitudes))

    def to_template(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Template coordinates of patient points ``(x, y)`` (broadcast to a common shape)."""
        shifted_x = x + np.zeros_like(y)
        shifted_y = y + np.zeros_like(x)
        for (kx, ky), phase, (ax, ay) in zip(
            self.wave_vectors, self.phases, self.amplitudes, strict=True
        ):
            wave = np.sin(np.float32(kx) * x + np.float32(ky) * y + np.float32(phase))
            shifted_x += np.float32(ax) * wave
            shifted_y += np.float32(ay) * wave
        return shifted_x, shifted_y


@dataclass(frozen=True)
class Pelvis:
    """One synthetic patient: surrounding layers, the gland and its zones, and landmarks.

    Shapes, centres and the balloon live in template space; ``warp`` maps patient space onto
    it (see :class:`SoftTissueWarp`).
    """

    layers: tuple[Layer, ...]
    gland: Shape
    capsule_mm: float
    zones: tuple[Layer, ...]
    gland_center: tuple[float, float, float]
    gland_semi_axes: tuple[float, float, float]
    body: EllipticCylinder
    balloon: Balloon | None
    warp: SoftTissueWarp

    def gland_bounds(self) -> tuple[Vector, Vector]:
        """Box around the gland in patient mm (it includes the largest lobe and warp)."""
        lower, upper = self.gland.bounds()
        reach = np.array([self.warp.max_displacement, self.warp.max_displacement, 0.0])
        return lower - reach, upper + reach


@dataclass(frozen=True)
class _Frame:
    """Landmarks shared by the structure builders: gland, body outline, hips, rectum."""

    gland: tuple[float, float, float]
    semi: tuple[float, float, float]
    anterior_surface: float
    posterior_surface: float
    head_x: float
    head_y: float
    head_z: float
    head_radius: float
    rectum_center: tuple[float, float]
    rectum_semi: tuple[float, float]


def sample_pelvis(rng: np.random.Generator, endorectal_balloon: bool) -> Pelvis:
    """Draw one patient's pelvis; with ``endorectal_balloon`` the rectum holds an inflated coil.

    Sizes and positions follow adult male anatomy with per-patient variation: gland volume
    log-uniform in about 20-80 cc, the central gland growing with it (benign hyperplasia),
    bladder filling, rectal content, body habitus and pelvic width. The balloon distends the
    rectum and indents the gland's posterior face, as in real endorectal examinations.
    """
    gland, semi, center = _sample_gland(rng)
    gx, gy, gz = center
    a, b, c = semi
    body_semi = (rng.uniform(165, 195), rng.uniform(105, 125))
    body_center = (rng.normal(0, 3), gy + rng.uniform(10, 20))
    body = EllipticCylinder(
        body_center, body_semi, (-200.0, 200.0), lobes=_random_lobes(rng, 0.02, dimensions=2)
    )
    rectum_semi = (rng.uniform(15, 21), rng.uniform(10, 14))
    frame = _Frame(
        gland=center,
        semi=semi,
        anterior_surface=body_center[1] - body_semi[1],
        posterior_surface=body_center[1] + body_semi[1],
        head_x=rng.uniform(86, 96),
        head_y=gy + rng.uniform(-6, 8),
        head_z=gz + rng.uniform(0, 14),
        head_radius=rng.uniform(21, 25),
        rectum_center=(gx + rng.normal(0, 2), gy + b + 3 + rectum_semi[1]),
        rectum_semi=rectum_semi,
    )

    layers: list[Layer] = [Layer(body, ((0.0, Tissue.SKIN), (-2.0, Tissue.FAT)))]
    layers += _muscles(rng, frame)
    layers += _bones(rng, frame)
    layers += _vessels(rng, frame)
    layers += _bladder_and_seminal_vesicles(rng, frame)
    rectum_layers, balloon = _rectum(rng, frame, endorectal_balloon)
    layers += rectum_layers
    # The natal cleft: a thin dark fold running in from the posterior skin at the midline.
    cleft_depth = rng.uniform(18, 35)
    cleft_center = (body_center[0], frame.posterior_surface - cleft_depth / 2)
    cleft = EllipticCylinder(cleft_center, (1.0, cleft_depth / 2), (-200.0, 200.0))
    layers.append(Layer(cleft, ((0.0, Tissue.AIR),)))

    labelled: Shape = gland
    if balloon is not None:
        # The inflated balloon pushes the posterior gland in: carve it with the balloon + wall.
        outer = balloon.radius + 3.5
        pushed = Ellipsoid(balloon.center, (outer, outer, balloon.half_length))
        labelled = Difference(gland, pushed)

    return Pelvis(
        warp=_sample_warp(rng),
        layers=tuple(layers),
        gland=labelled,
        capsule_mm=float(rng.uniform(0.6, 1.1)),
        zones=_zones(rng, center, semi, gland.tilt),
        gland_center=(gx, gy, gz),
        gland_semi_axes=(a, b, c),
        body=body,
        balloon=balloon,
    )


def _sample_warp(rng: np.random.Generator) -> SoftTissueWarp:
    """Six plane waves of 35-120 mm wavelength, about 3 mm RMS displacement in all.

    Each wave's amplitude is proportional to its wavelength so the strain stays small (the
    warp bends outlines, it does not fold tissue).
    """
    waves = 6
    wavelength = rng.uniform(35.0, 120.0, waves)
    direction = rng.uniform(0.0, 2 * np.pi, waves)
    wave_vectors = tuple(
        (float(2 * np.pi / length * np.cos(angle)), float(2 * np.pi / length * np.sin(angle)))
        for length, angle in zip(wavelength, direction, strict=True)
    )
    phases = tuple(float(value) for value in rng.uniform(0.0, 2 * np.pi, waves))
    strain = rng.normal(0.0, 0.016, (waves, 2))
    amplitudes = tuple(
        (float(sx * length), float(sy * length))
        for (sx, sy), length in zip(strain, wavelength, strict=True)
    )
    return SoftTissueWarp(wave_vectors, phases, amplitudes)


def _sample_gland(
    rng: np.random.Generator,
) -> tuple[GlandShape, tuple[float, float, float], tuple[float, float, float]]:
    """The gland outline; its volume is log-uniform in 20-80 cc (before the balloon's dent)."""
    volume_mm3 = math.exp(rng.uniform(math.log(20.0), math.log(80.0))) * 1000.0
    ratio_ap, ratio_si = rng.uniform(0.66, 0.8), rng.uniform(0.8, 1.0)
    # The warps below remove about 12 % of the plain ellipsoid's volume; compensate.
    a = (volume_mm3 / 0.88 / (4 / 3 * math.pi * ratio_ap * ratio_si)) ** (1 / 3)
    semi = (a, a * ratio_ap, a * ratio_si)
    center = (rng.normal(0, 2.0), rng.normal(0, 3.0), rng.normal(0, 3.0))
    lobes = _random_lobes(rng, 0.025, dimensions=3)
    gland = GlandShape(
        center=center,
        semi_axes=semi,
        tilt=float(rng.uniform(0.0, 0.4)),
        apex_taper=float(rng.uniform(0.15, 0.35)),
        anterior_narrowing=float(rng.uniform(0.1, 0.3)),
        posterior_flattening=float(rng.uniform(0.5, 1.5)),
        lobes=lobes,
    )
    return gland, semi, center


def _zones(
    rng: np.random.Generator,
    center: tuple[float, float, float],
    semi: tuple[float, float, float],
    tilt: float,
) -> tuple[Layer, ...]:
    """Zonal anatomy inside the capsule, painted over the peripheral zone that fills it.

    The central gland (transition + central zone) sits anteriorly and towards the base, so
    the peripheral zone is a posterolateral crescent largest at the apex; it grows with gland
    volume (hyperplasia) and holds a few dark-rimmed nodules. The anterior fibromuscular
    stroma is a dark cap; the urethra runs through the central gland.
    """
    gx, gy, gz = center
    a, b, c = semi
    rotation = _rotation_about("x", tilt)
    volume_cc = 4 / 3 * math.pi * a * b * c / 1000
    growth = min(max((volume_cc - 20) / 60, 0.0), 1.0)
    fraction = 0.55 + 0.2 * growth + rng.uniform(-0.04, 0.04)
    offset = rotation @ np.array([0.0, -0.22 * b, 0.2 * c])
    cg_center = (gx + offset[0], gy + offset[1], gz + offset[2])
    cg_semi = (fraction * a * 1.05, fraction * b * 1.1, fraction * c * 1.1)
    zones = [Layer(Ellipsoid(cg_center, cg_semi, rotation), ((0.0, Tissue.CENTRAL_GLAND),))]
    for _ in range(int(rng.integers(0, 4))):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        radius = float(rng.uniform(3.0, 7.0))
        spot = np.asarray(cg_center) + direction * np.asarray(cg_semi) * rng.uniform(0.0, 0.5)
        nodule = Ellipsoid(
            (float(spot[0]), float(spot[1]), float(spot[2])),
            (radius, radius * 0.9, radius * 1.1),
        )
        rim = ((0.0, Tissue.FIBROMUSCULAR_STROMA), (-0.6, Tissue.CENTRAL_GLAND))
        zones.append(Layer(nodule, rim))
    stroma_offset = rotation @ np.array([0.0, -0.95 * b, 0.0])
    stroma_center = (gx + stroma_offset[0], gy + stroma_offset[1], gz + stroma_offset[2])
    stroma = Ellipsoid(stroma_center, (0.45 * a, 0.2 * b, 0.75 * c), rotation)
    zones.append(Layer(stroma, ((0.0, Tissue.FIBROMUSCULAR_STROMA),)))
    urethra = EllipticCylinder((gx, gy - 0.2 * b), (1.8, 1.8), (gz - c, gz + c))
    zones.append(Layer(urethra, ((0.0, Tissue.URETHRA),)))
    return tuple(zones)


def _muscles(rng: np.random.Generator, frame: _Frame) -> list[Layer]:
    """Gluteus maximus and medius, iliopsoas, rectus abdominis, obturator internus.

    The obturator internus lines the pelvic side wall just medial to the acetabulum: a thick
    dark band either side of the gland, its posterior end turning in towards the rectum.
    """
    _, gy, gz = frame.gland
    c = frame.semi[2]
    everywhere = (-200.0, 200.0)
    muscle = ((0.0, Tissue.MUSCLE),)
    layers: list[Layer] = []
    gluteal_y = frame.posterior_surface - rng.uniform(35, 45)
    # The acetabular plate's medial face (see _bones): obturator internus lies against it.
    plate_face = frame.head_x - frame.head_radius - 14
    for side in (-1.0, 1.0):
        gluteus = EllipticCylinder(
            (side * rng.uniform(80, 95), gluteal_y),
            (rng.uniform(62, 75), rng.uniform(28, 36)),
            everywhere,
            angle=side * rng.uniform(0.25, 0.4),
            lobes=_random_lobes(rng, 0.05, dimensions=2),
        )
        medius = EllipticCylinder(
            (side * (frame.head_x + 45), frame.head_y - 5),
            (26.0, 50.0),
            (gz, 200.0),
            lobes=_random_lobes(rng, 0.05, dimensions=2),
        )
        psoas = EllipticCylinder(
            (side * (frame.head_x - 8), frame.head_y - frame.head_radius - 16),
            (rng.uniform(15, 20), rng.uniform(11, 15)),
            everywhere,
            lobes=_random_lobes(rng, 0.05, dimensions=2),
        )
        rectus = EllipticCylinder(
            (side * 26.0, frame.anterior_surface + rng.uniform(14, 20)),
            (28.0, 6.0),
            (gz - 5, 200.0),
            angle=side * 0.08,
            lobes=_random_lobes(rng, 0.03, dimensions=2),
        )
        thickness = rng.uniform(9, 12)
        obturator = EllipticCylinder(
            (side * (plate_face - thickness), gy + 6),
            (thickness, rng.uniform(48, 56)),
            (gz - c - 30, frame.head_z + 30),
            angle=side * 0.18,
            lobes=_random_lobes(rng, 0.04, dimensions=2),
        )
        shapes = (gluteus, medius, psoas, rectus, obturator)
        layers += [Layer(shape, muscle) for shape in shapes]
    return layers


def _bones(rng: np.random.Generator, frame: _Frame) -> list[Layer]:
    """Pubic bones and symphysis, rami, acetabula, femoral heads, necks and trochanters, ischia.

    Cortex is a 1.5 mm dark shell; the femur holds yellow (fatty, bright) marrow, the pelvic
    bones mixed red/yellow marrow of intermediate signal.
    """
    _, gy, gz = frame.gland
    _, b, c = frame.semi
    cortex = 1.5
    pelvic = ((0.0, Tissue.CORTICAL_BONE), (-cortex, Tissue.MIXED_MARROW))
    femoral = ((0.0, Tissue.CORTICAL_BONE), (-cortex, Tissue.YELLOW_MARROW))
    pubic_y = gy - b - rng.uniform(12, 20) - 11
    pubic_z = gz - 0.35 * c + rng.normal(0, 4)
    head_x, head_y, head_z, radius = frame.head_x, frame.head_y, frame.head_z, frame.head_radius
    symphysis = Ellipsoid((0.0, pubic_y, pubic_z), (4.0, 10.0, 18.0))
    layers = [Layer(symphysis, ((0.0, Tissue.CARTILAGE),))]
    for side in (-1.0, 1.0):
        pubis = Ellipsoid(
            (side * 16.0, pubic_y, pubic_z),
            (13.0, 11.0, 21.0),
            lobes=_random_lobes(rng, 0.04, dimensions=3),
        )
        layers.append(Layer(pubis, pelvic))
        ramus_end = (side * (head_x - radius - 6), head_y - 16, head_z + 6)
        ramus = _rod((side * 16.0, pubic_y, pubic_z + 12), ramus_end, (8.0, 9.0))
        layers.append(Layer(ramus, pelvic))
        # Acetabular floor and posterior column: a plate between obturator internus and head.
        plate_center = (side * (head_x - radius - 6), head_y + 8, head_z - 8)
        plate = Ellipsoid(
            plate_center, (9.0, 36.0, 38.0), lobes=_random_lobes(rng, 0.04, dimensions=3)
        )
        layers.append(Layer(plate, pelvic))
        ischium = (side * (head_x - radius - 8), head_y + rng.uniform(28, 36), head_z - 42)
        layers.append(Layer(Ellipsoid(ischium, (14.0, 18.0, 24.0)), pelvic))
        head = (side * head_x, head_y, head_z)
        joint = Ellipsoid(head, (radius + 1.5, radius + 1.5, radius + 1.5))
        layers.append(Layer(joint, ((0.0, Tissue.CARTILAGE),)))
        neck_end = (side * (head_x + 42), head_y + 4, head_z - 38)
        layers.append(Layer(_rod(head, neck_end, (14.0, 15.0)), femoral))
        trochanter = Ellipsoid((side * (head_x + 48), head_y + 6, head_z - 30), (16.0, 22.0, 26.0))
        layers.append(Layer(trochanter, femoral))
        layers.append(Layer(Ellipsoid(head, (radius, radius, radius)), femoral))
    return layers


def _vessels(rng: np.random.Generator, frame: _Frame) -> list[Layer]:
    """Femoral vessels and neurovascular bundles (flow voids), and the periprostatic plexus.

    The venous plexus is bright on T2 and hugs the gland anterolaterally: another bright
    structure next to the gland that is not gland.
    """
    gx, gy, gz = frame.gland
    a, b, c = frame.semi
    everywhere = (-200.0, 200.0)
    void = ((0.0, Tissue.FLOWING_BLOOD),)
    layers: list[Layer] = []
    vessel_y = frame.head_y - frame.head_radius - rng.uniform(22, 30)
    for side in (-1.0, 1.0):
        artery_x = side * (frame.head_x - rng.uniform(25, 32))
        layers.append(Layer(EllipticCylinder((artery_x, vessel_y), (4.0, 4.0), everywhere), void))
        vein = EllipticCylinder((artery_x - side * 11, vessel_y + 2), (5.5, 5.0), everywhere)
        layers.append(Layer(vein, void))
        bundle = (gx + side * 0.75 * a, gy + 0.8 * b)
        layers.append(Layer(EllipticCylinder(bundle, (1.6, 1.6), (gz - c, gz + c)), void))
    plexus = Intersection(
        (
            Ellipsoid((gx, gy - 1.0, gz), (a + rng.uniform(2, 4), b + rng.uniform(2, 4), 0.85 * c)),
            HalfSpace((0.0, 1.0, 0.0), gy - 0.1 * b),
        )
    )
    layers.append(Layer(plexus, ((0.0, Tissue.VENOUS_PLEXUS),)))
    return layers


def _bladder_and_seminal_vesicles(rng: np.random.Generator, frame: _Frame) -> list[Layer]:
    """The bladder above and in front of the base (variable filling) and the seminal vesicles.

    The vesicles are bright, convoluted tubes running superolaterally from behind the base:
    on T2 they look like peripheral zone and are the classic false positive.
    """
    gx, gy, gz = frame.gland
    _, b, c = frame.semi
    radius = rng.uniform(18, 42)
    bladder_center = (gx + rng.normal(0, 3), gy - 0.35 * b - 4, gz + 0.75 * c + 0.8 * radius)
    bladder = Ellipsoid(
        bladder_center,
        (1.25 * radius, 0.95 * radius, 0.85 * radius),
        lobes=_random_lobes(rng, 0.04, dimensions=3),
    )
    layers = [Layer(bladder, ((0.0, Tissue.BLADDER_WALL), (-2.5, Tissue.URINE)))]
    for side in (-1.0, 1.0):
        start = (gx + side * rng.uniform(4, 8), gy + 0.55 * b, gz + 0.7 * c)
        end = (
            gx + side * rng.uniform(24, 34),
            gy + 0.35 * b - rng.uniform(0, 6),
            gz + c + rng.uniform(6, 14),
        )
        vesicle = _rod(start, end, (rng.uniform(4.5, 6.5), rng.uniform(6, 8)))
        layers.append(Layer(vesicle, ((0.0, Tissue.SEMINAL_VESICLE),)))
    return layers


def _rectum(
    rng: np.random.Generator, frame: _Frame, endorectal_balloon: bool
) -> tuple[list[Layer], Balloon | None]:
    """The rectum behind the gland, in the levator ani sling, collapsed or holding a balloon.

    Without a coil the lumen holds mixed content and sometimes gas. The coil's balloon is
    filled with air or perfluorocarbon (no signal) and shows a faint inner ring where the
    membrane meets a thin fluid layer. The levator ani is a thin dark sheet beside the
    lower gland that slings behind the rectum.
    """
    gx, gy, gz = frame.gland
    a, b, c = frame.semi
    rx, ry = frame.rectum_center
    semi_x, semi_y = frame.rectum_semi
    layers: list[Layer] = []
    levator_z = (gz - c - 30, gz + 0.1 * c)
    # A U open anteriorly: beside the gland, then close behind the rectum.
    sling_center = (rx, (gy + ry) / 2)
    sling_semi = (max(a, semi_x) + 5, ry + semi_y + 3 - sling_center[1])
    sling_lobes = _random_lobes(rng, 0.03, dimensions=2)
    sling = Difference(
        EllipticCylinder(
            sling_center, (sling_semi[0] + 5, sling_semi[1] + 5), levator_z, lobes=sling_lobes
        ),
        EllipticCylinder(sling_center, sling_semi, levator_z, lobes=sling_lobes),
    )
    open_front = HalfSpace((0.0, -1.0, 0.0), -(gy - 0.3 * b))
    layers.append(Layer(Intersection((sling, open_front)), ((0.0, Tissue.MUSCLE),)))
    rectum = EllipticCylinder(
        (rx, ry),
        (semi_x, semi_y),
        (-200.0, 200.0),
        bend=rng.uniform(0.002, 0.005),
        lobes=_random_lobes(rng, 0.05, dimensions=2),
    )
    layers.append(Layer(rectum, ((0.0, Tissue.RECTAL_WALL), (-3.0, Tissue.RECTAL_CONTENT))))
    if not endorectal_balloon:
        if rng.random() < 0.5:
            gas = Ellipsoid(
                (rx, ry - 0.3 * semi_y, gz + rng.uniform(-15, 15)),
                (0.6 * semi_x, 0.45 * semi_y, rng.uniform(8, 20)),
            )
            layers.append(Layer(gas, ((0.0, Tissue.AIR),)))
        return layers, None
    radius = rng.uniform(17, 23)
    indent = rng.uniform(2, 5)
    balloon = Balloon(
        center=(gx + rng.normal(0, 1.5), gy + b + 2.5 + radius - indent, gz - 0.1 * c),
        radius=radius,
        half_length=c + rng.uniform(25, 35),
    )
    membrane = 2.0 + 0.12 * radius
    # The stretched rectal wall is thin; the balloon fills the lumen.
    outer = Ellipsoid(balloon.center, (radius + 2.0, radius + 2.0, balloon.half_length + 2.0))
    paints = (
        (0.0, Tissue.RECTAL_WALL),
        (-2.0, Tissue.COIL_BALLOON),
        (-membrane, Tissue.BALLOON_MEMBRANE),
        (-membrane - 1.0, Tissue.COIL_BALLOON),
    )
    layers.append(Layer(outer, paints))
    return layers, balloon
