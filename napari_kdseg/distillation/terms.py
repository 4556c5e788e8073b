"""The registry of distillation terms: the terms of eq. 8 besides the segmentation loss.

Each term is declared by a :class:`TermSpec`: its name (the key of its weight in
:class:`~napari_kdseg.training.config.DistillationConfig`, its tracker and log column), the
paper's short name, its default weight, whether it reads the teacher's features, and how to
build it. The Distiller, the configuration, the command line, the napari panel, the job
planner and the experiment grids all follow this registry, in registration order (the order
of ``--lambdas``).

Keras-free: a builder named as ``"module:attr"`` is imported only when a term is built, so
the napari process reads the registry without loading Keras.

Adding a term: write its module (the loss and a
:class:`~napari_kdseg.distillation.base.DistillationTerm` beside it, as
:mod:`napari_kdseg.losses.logits` does) and register a :class:`TermSpec` naming it. A term
registered beside the paper's three is opt-in: the default configuration keeps the paper's.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from napari_kdseg.distillation.base import DistillationTerm
    from napari_kdseg.training.config import DistillationConfig

#: ``(config, num_classes) -> term``; a :class:`DistillationTerm` subclass is one.
TermBuilder: TypeAlias = "Callable[[DistillationConfig, int], DistillationTerm]"

# The Distiller's own trackers, which a term's name would shadow.
_RESERVED_NAMES = ("loss", "segmentation", "dice")

#: The ways round LM's divergence can be taken (``losses/logits.py``): the paper's
#: ``D_KL(p_s || p_t)`` and Hinton's ``D_KL(p_t || p_s)``.
LOGITS_DIRECTIONS = ("paper", "hinton")


@dataclass(frozen=True)
class TermSpec:
    """One distillation term, declared without Keras.

    Attributes:
        name: key of its weight in ``DistillationConfig.lambdas``, name of its tracker and of
            its column in ``log.csv`` (``"logits"``).
        short_name: the paper's name (``"LM"``): labels, ``--lambdas`` and cell folders.
        default_weight: its weight (lambda) when it is switched on without one.
        needs_teacher_features: whether it reads the teacher's intermediate features (at the
            taps its built term lists in ``teacher_taps``), which a logits-only teacher lacks.
        build: ``(config, num_classes) -> DistillationTerm``, or its ``"module:attr"`` path,
            imported at the first build.
    """

    name: str
    short_name: str
    default_weight: float
    needs_teacher_features: bool
    build: str | TermBuilder

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name in _RESERVED_NAMES:
            raise ValueError(
                f"a distillation term's name must be an identifier other than "
                f"{', '.join(_RESERVED_NAMES)}, got {self.name!r}"
            )
        if not self.short_name.isalnum():
            raise ValueError(f"short names are letters and digits, got {self.short_name!r}")
        if self.default_weight <= 0:
            raise ValueError(f"{self.name}: default_weight must be > 0, got {self.default_weight}")

    def create(self, config: DistillationConfig, num_classes: int) -> DistillationTerm:
        """The term, built by :attr:`build` for ``config`` and logits of ``num_classes``."""
        build = self.build
        if isinstance(build, str):
            module, _, attribute = build.partition(":")
            build = getattr(importlib.import_module(module), attribute)
        term = build(config, num_classes)
        if term.teacher_taps and not self.needs_teacher_features:
            raise ValueError(
                f"{self.short_name} reads the teacher's features at {list(term.teacher_taps)}, "
                "but its TermSpec says needs_teacher_features=False"
            )
        return term


_REGISTRY: dict[str, TermSpec] = {}


def register(spec: TermSpec) -> TermSpec:
    """Adds ``spec`` after the registered terms; its name and short name must be new."""
    for other in _REGISTRY.values():
        if spec.name == other.name or spec.short_name == other.short_name:
            raise ValueError(
                f"distillation term {spec.name!r} ({spec.short_name}) clashes with the "
                f"registered {other.name!r} ({other.short_name})"
            )
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes the term ``name`` (tests register and remove their own)."""
    del _REGISTRY[get(name).name]


def registered() -> tuple[TermSpec, ...]:
    """Every registered term, in registration order."""
    return tuple(_REGISTRY.values())


def get(name: str) -> TermSpec:
    check_names([name])
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def short_names() -> dict[str, str]:
    """Name -> the paper's short name, in registration order."""
    return {spec.name: spec.short_name for spec in _REGISTRY.values()}


def check_names(given: Iterable[str]) -> None:
    """Raises for any name that is not a registered term, listing the registered ones."""
    unknown = sorted(set(given) - set(_REGISTRY))
    if unknown:
        raise ValueError(f"unknown distillation losses {unknown}; use {names()}")


#: The paper's terms (section 2), switched on by default.
PAPER_TERMS: tuple[str, ...] = tuple(
    register(spec).name
    for spec in (
        TermSpec("logits", "LM", 0.2, False, "napari_kdseg.losses.logits:LogitsTerm"),
        TermSpec(
            "kernel_matrix", "KMM", 0.9, True, "napari_kdseg.losses.kernel_matrix:KernelMatrixTerm"
        ),
        TermSpec("affinity", "AAM", 0.9, False, "napari_kdseg.losses.affinity:AffinityTerm"),
    )
)


def paper_lambdas() -> dict[str, float]:
    """The weights of eq. 8 (0.2, 0.9, 0.9 for LM, KMM, AAM): the default configuration."""
    return {name: get(name).default_weight for name in PAPER_TERMS}
