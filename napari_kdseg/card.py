"""The model card: what a trained model is, how to feed it and how it was made.

Training writes it as JSON beside the ``.keras`` file (``enet.keras`` -> ``enet.json``);
``kdseg export`` adds an ``export`` section and embeds it in the ONNX file's
``metadata_props`` under :data:`CARD_METADATA_KEY`. Every reader goes through
:class:`ModelCard`, which checks the format, the sections and their types, and that the input
size stored in ``input`` agrees with the one in ``preprocess``.

Imports neither Keras, ONNX Runtime nor Qt: the napari process reads cards too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_kdseg.core.atomic import atomic_path
from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.data.preprocess import LOCAL_MEAN_SIGMA_MM, PreprocessConfig
from napari_kdseg.data.provenance import REAL, SYNTHETIC, SiteData

if TYPE_CHECKING:
    from napari_kdseg.training.config import TrainConfig

CARD_FORMAT = "napari-kdseg model card 1"
#: Key of the model card (JSON) in an exported ONNX file's ``metadata_props``.
CARD_METADATA_KEY = "napari_kdseg.card"
#: The classes every model predicts, in the order of its logits.
CLASS_NAMES = ("background", "prostate")
#: The card's top-level keys in the order training writes them (``export`` comes after).
SECTIONS = (
    "format",
    "architecture",
    "width",
    "input",
    "preprocess",
    "class_names",
    "training_sites",
    "training_data",
    "training_statistics",
    "teacher",
    "teacher_model",
    "losses",
    "metrics",
    "training",
    "software",
)
_KNOWN = frozenset((*SECTIONS, "export"))
INPUT_LAYOUT = "NHWC, channels are neighbouring slices centred on the predicted one"
#: What ``kdseg segment`` and the segmentation panel say when a model that saw only the
#: phantom meets a real scan.
SYNTHETIC_ONLY_WARNING = (
    "This model was trained only on synthetic scans; its output on a real scan is not reliable."
)
PREPROCESS_DETAILS = {
    "normalisation": "z-score over the whole volume",
    "labels": "label > 0 is prostate",
}


def preprocess_details(preprocess: PreprocessConfig) -> dict[str, str]:
    """The card's words for how ``preprocess`` normalises intensities and reads labels."""
    details = dict(PREPROCESS_DETAILS)
    if preprocess.intensity == "local":
        details["normalisation"] = (
            f"each slice divided by its local mean (Gaussian of {LOCAL_MEAN_SIGMA_MM:g} mm), "
            "then z-score over the whole volume"
        )
    return details


class ModelFileError(KdsegDataError):
    """A model file (or its card) that cannot be used, with the file named."""


def card_path_for(model_path: Path) -> Path:
    """Where training writes the card of ``model.keras``: ``model.json`` beside it."""
    return model_path.with_suffix(".json")


@dataclass(frozen=True)
class ModelCard:
    """A validated model card.

    The input size is held once, in ``preprocess``; the ``input`` section is written from it.
    ``None`` marks a section the card does not have (``teacher`` is ``None`` also for a model
    trained without one). ``training_statistics`` summarises the training scans (spacing,
    field of view, intensity histogram after normalisation, gland volumes) for the quality
    report (:mod:`napari_kdseg.inference.quality`); cards written before it have it ``None``.
    ``input_details`` and ``preprocess_details`` hold the descriptive
    keys of those sections besides the numbers; ``extra`` holds top-level keys this version
    does not know, so a newer card round-trips. ``sections`` is the top-level keys in the
    order the card had them (empty: :data:`SECTIONS`' order); a key listed there is written
    even when its value is ``None``, which keeps ``"teacher": null``. Cards with the same
    content are equal whatever their order.

    ``training_data`` says, per training site, whether its scans were synthetic (the phantom)
    or real and how many cases (with a mask) were used; ``teacher_model`` describes the
    teacher (``kind`` ``"keras"`` or ``"taps"``, a ``description`` in words, its file's hash).
    Cards written before these sections existed have them ``None``.
    """

    preprocess: PreprocessConfig
    architecture: str | None = None
    width: float | None = None
    input_details: dict[str, Any] | None = None
    preprocess_details: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    training_sites: tuple[str, ...] | None = None
    training_data: tuple[SiteData, ...] | None = None
    teacher: str | None = None
    teacher_model: dict[str, Any] | None = None
    training_statistics: dict[str, Any] | None = None
    losses: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    software: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sections: tuple[str, ...] = field(default=(), compare=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One network input without its batch dimension: (size, size, context)."""
        return self.preprocess.size, self.preprocess.size, self.preprocess.context

    @property
    def best_val_dice(self) -> float | None:
        value = (self.metrics or {}).get("best_val_dice")
        return None if value is None else float(value)

    @property
    def synthetic_only(self) -> bool:
        """Whether the card says every training scan was synthetic (False when it does not
        say where its data came from: an older card)."""
        data = self.training_data or ()
        return bool(data) and all(site.origin == SYNTHETIC for site in data)

    @property
    def training_seconds(self) -> float:
        """Seconds training took (0 when the card does not say)."""
        return float((self.training or {}).get("seconds", 0.0))

    def check_input_shape(
        self, shape: Sequence[Any], where: Path | str, what: str = "model input"
    ) -> None:
        """Refuse a batch shape (batch first, any batch size) other than the card's input."""
        size, _, context = self.input_shape
        if len(shape) != 4 or tuple(shape[1:]) != self.input_shape:
            found = ", ".join(str(dimension) for dimension in shape)
            raise ModelFileError(
                where,
                f"{what} ({found}) does not match the card's (batch, {size}, {size}, "
                f"{context}), that is (batch, size, size, context)",
            )

    def with_export(self, export: dict[str, Any]) -> ModelCard:
        """This card with the ``export`` section that ``kdseg export`` adds."""
        return replace(self, export=export)

    def to_json(self) -> dict[str, Any]:
        """The card as JSON data: same keys, order and values as the card it was read from."""
        size, _, context = self.input_shape
        values = {
            "format": CARD_FORMAT,
            "architecture": self.architecture,
            "width": self.width,
            "input": None
            if self.input_details is None
            else {"size": size, "channels": context, **self.input_details},
            "preprocess": self.preprocess.to_json() | self.preprocess_details,
            "class_names": None if self.class_names is None else list(self.class_names),
            "training_sites": None if self.training_sites is None else list(self.training_sites),
            "training_data": None
            if self.training_data is None
            else [site.to_json() for site in self.training_data],
            "training_statistics": self.training_statistics,
            "teacher": self.teacher,
            "teacher_model": self.teacher_model,
            "losses": self.losses,
            "metrics": self.metrics,
            "training": self.training,
            "software": self.software,
        }
        values |= self.extra
        values["export"] = self.export  # last, as export adds it to a finished card
        present = {k: v for k, v in values.items() if v is not None or k in self.sections}
        order = [k for k in self.sections if k in present]
        order += [k for k in present if k not in order]
        return copy.deepcopy({key: present[key] for key in order})

    def to_metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entry that carries this card."""
        return {CARD_METADATA_KEY: json.dumps(self.to_json())}

    def write_beside(self, model_path: Path) -> Path:
        """Write the card beside ``model_path`` (atomically); returns the card's path."""
        path = card_path_for(model_path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2))
        return path

    @classmethod
    def from_json(cls, data: Any, where: Path | str) -> ModelCard:
        """The card in ``data`` (parsed JSON); :class:`ModelFileError` naming ``where`` if the
        card is not one, lacks ``preprocess`` or has a section of the wrong type."""
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ModelFileError(where, f"not a napari-kdseg model card (format {found!r})")
        if not isinstance(data.get("preprocess"), dict):
            raise ModelFileError(where, "model card has no 'preprocess' section")
        data = copy.deepcopy(data)  # the card must not share mutable sections with the caller
        sections = _Sections(data, where)
        preprocess, preprocess_details = sections.preprocess()
        return cls(
            preprocess=preprocess,
            architecture=sections.get("architecture", "a string"),
            width=sections.get("width", "a number"),
            input_details=sections.input_details(preprocess),
            preprocess_details=preprocess_details,
            class_names=sections.names("class_names"),
            training_sites=sections.names("training_sites"),
            training_data=sections.training_data(),
            training_statistics=sections.get("training_statistics", "an object"),
            teacher=sections.get("teacher", "a string", nullable=True),
            teacher_model=sections.get("teacher_model", "an object", nullable=True),
            losses=sections.get("losses", "an object"),
            metrics=sections.metrics(),
            training=sections.get("training", "an object"),
            software=sections.get("software", "an object"),
            export=sections.get("export", "an object"),
            extra={key: value for key, value in data.items() if key not in _KNOWN},
            sections=tuple(data),
        )

    @classmethod
    def parse(cls, text: str, where: Path | str) -> ModelCard:
        """The card in ``text`` (JSON), checked as :meth:`from_json` does."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelFileError(where, f"unreadable model card: {error}") from error
        return cls.from_json(data, where)

    @classmethod
    def read_beside(cls, model_path: Path) -> ModelCard:
        """The card training wrote beside ``model_path`` (a ``.keras`` file)."""
        path = card_path_for(model_path)
        if not path.is_file():
            raise ModelFileError(
                model_path, f"no model card beside it (expected {path.name}, written by training)"
            )
        try:
            text = path.read_text()
        except OSError as error:
            raise ModelFileError(path, f"unreadable model card: {error}") from error
        return cls.parse(text, path)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], where: Path | str) -> ModelCard:
        """The card embedded in an ONNX file's ``metadata_props`` by ``kdseg export``."""
        if CARD_METADATA_KEY not in metadata:
            raise ModelFileError(
                where,
                f"ONNX file without a napari-kdseg model card (metadata key "
                f"{CARD_METADATA_KEY!r}); export it with `kdseg export`",
            )
        return cls.parse(metadata[CARD_METADATA_KEY], where)

    @classmethod
    def for_training(
        cls,
        config: TrainConfig,
        sites: Sequence[str],
        teacher: Path | None,
        history: Mapping[str, Sequence[float]],
        best_val_dice: float | None,
        seconds: float,
        steps_per_epoch: int,
        optimizer_steps: int,
        placement: dict[str, Any],
        software: dict[str, Any],
        training_data: Sequence[SiteData] | None = None,
        teacher_model: dict[str, Any] | None = None,
        training_statistics: dict[str, Any] | None = None,
    ) -> ModelCard:
        """The card of a finished run; ``software`` names the versions it ran with,
        ``training_data`` the origin of each site's scans, ``teacher_model`` the teacher,
        ``training_statistics`` the summary of the training scans."""
        distillation = config.distillation
        losses: dict[str, Any] = {"segmentation": config.segmentation_loss}
        if teacher is not None:
            losses |= {name: distillation.lambdas[name] for name in distillation.enabled}
        return cls(
            preprocess=config.preprocess,
            architecture=config.model,
            width=config.width,
            input_details={"layout": INPUT_LAYOUT},
            preprocess_details=preprocess_details(config.preprocess),
            class_names=CLASS_NAMES,
            training_sites=tuple(sites),
            training_data=None if training_data is None else tuple(training_data),
            training_statistics=None
            if training_statistics is None
            else _as_json(training_statistics),
            teacher=None if teacher is None else str(teacher),
            teacher_model=None if teacher_model is None else _as_json(teacher_model),
            losses=losses,
            metrics={
                "best_val_dice": best_val_dice,
                "final": {name: float(values[-1]) for name, values in history.items()},
            },
            training=_as_json(
                config.to_json()
                | {
                    "seconds": round(seconds, 1),
                    "steps_per_epoch": steps_per_epoch,
                    "optimizer_steps": optimizer_steps,
                    "placement": placement,
                }
            ),
            software=dict(software),
            # a run that could not summarise its scans writes no empty section
            sections=SECTIONS
            if training_statistics is not None
            else tuple(key for key in SECTIONS if key != "training_statistics"),
        )


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "a string": (str,),
    "a number": (int, float),
    "a list": (list,),
    "an object": (dict,),
}


class _Sections:
    """Reads the sections of one card's JSON, naming the file in every error."""

    def __init__(self, data: dict[str, Any], where: Path | str) -> None:
        self.data, self.where = data, where

    def error(self, key: str, problem: str) -> ModelFileError:
        return ModelFileError(self.where, f"model card has an unusable {key!r}: {problem}")

    def get(self, key: str, expected: str, nullable: bool = False) -> Any:
        """The section ``key`` (None when absent), checked to be of the JSON type ``expected``."""
        value = self.data.get(key)
        if value is None and (nullable or key not in self.data):
            return None
        if _json_type(value) != expected:
            raise self.error(key, f"expected {expected}, got {_json_type(value)}")
        return value

    def names(self, key: str) -> tuple[str, ...] | None:
        names = self.get(key, "a list")
        if names is not None and not all(isinstance(name, str) for name in names):
            raise self.error(key, f"expected a list of strings, got {names!r}")
        return None if names is None else tuple(names)

    def integer(self, key: str, section: dict[str, Any], name: str) -> int:
        if name not in section:
            raise self.error(key, f"{name!r} is missing")
        value = section[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"{name!r} must be an integer, got {value!r}")
        return value

    def preprocess(self) -> tuple[PreprocessConfig, dict[str, Any]]:
        section = self.data["preprocess"]
        size = self.integer("preprocess", section, "size")
        context = self.integer("preprocess", section, "context")
        orientation = section.get("orientation", "LPS")
        pixel_mm = section.get("pixel_mm")
        intensity = section.get("intensity", "volume")
        if pixel_mm is not None and (
            isinstance(pixel_mm, bool) or not isinstance(pixel_mm, int | float)
        ):
            raise self.error("preprocess", f"'pixel_mm' must be a number, got {pixel_mm!r}")
        try:
            preprocess = PreprocessConfig(
                size=size,
                context=context,
                orientation=orientation,
                pixel_mm=pixel_mm,
                intensity=intensity,
            )
        except (TypeError, ValueError) as error:
            raise self.error("preprocess", str(error)) from error
        named = {"size", "context", "orientation", "pixel_mm", "intensity"}
        return preprocess, {k: v for k, v in section.items() if k not in named}

    def input_details(self, preprocess: PreprocessConfig) -> dict[str, Any] | None:
        """What ``input`` says besides its size, which must agree with ``preprocess``."""
        section = self.get("input", "an object")
        if section is None:
            return None
        size = self.integer("input", section, "size")
        channels = self.integer("input", section, "channels")
        if (size, channels) != (preprocess.size, preprocess.context):
            raise ModelFileError(
                self.where,
                f"model card's two input sizes disagree: 'input' says {size} x {size} x "
                f"{channels}, 'preprocess' says {preprocess.size} x {preprocess.size} x "
                f"{preprocess.context}",
            )
        return {k: v for k, v in section.items() if k not in ("size", "channels")}

    def training_data(self) -> tuple[SiteData, ...] | None:
        """``training_data``: one object per site with its origin and case counts."""
        entries = self.get("training_data", "a list")
        if entries is None:
            return None
        sites = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise self.error("training_data", f"expected objects, got {entry!r}")
            site, origin = entry.get("site"), entry.get("origin")
            cases, labelled = entry.get("cases"), entry.get("labelled")
            if not isinstance(site, str) or origin not in (SYNTHETIC, REAL):
                raise self.error(
                    "training_data",
                    f"each site needs a name and an origin ({SYNTHETIC!r} or {REAL!r}), "
                    f"got {entry!r}",
                )
            counts = (cases, labelled)
            if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
                raise self.error(
                    "training_data", f"'cases' and 'labelled' must be counts, got {entry!r}"
                )
            sites.append(SiteData(site, origin, cases, labelled))
        return tuple(sites)

    def metrics(self) -> dict[str, Any] | None:
        metrics = self.get("metrics", "an object")
        dice = (metrics or {}).get("best_val_dice")
        if dice is not None and _json_type(dice) != "a number":
            raise self.error("metrics", f"'best_val_dice' must be a number, got {dice!r}")
        return metrics


def _as_json(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as reading its JSON back gives it (tuples become lists), so a card made in
    memory equals the same card read from its file."""
    return json.loads(json.dumps(data))


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for checks and error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: True is an int to Python
        return "true or false"
    for name, kinds in _JSON_TYPES.items():
        if isinstance(value, kinds):
            return name
    return type(value).__name__
