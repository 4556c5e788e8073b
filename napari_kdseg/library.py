"""The model library: exported ONNX students in one folder, each described by its model card.

The distillation panel exports students into :func:`library_dir`; the segmentation panel lists
them with :func:`list_models`. Reading a card only parses the ONNX protobuf (no inference
session, no TensorFlow, no Qt), and a file that cannot be read is listed with its problem
instead of breaking the list.

A model is named and described in a clinician's words (:meth:`LibraryModel.title`,
:meth:`LibraryModel.summary`); the file, the architecture's and the paper's names and the
input's shape are in :meth:`LibraryModel.details`, for a tooltip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from napari_kdseg.architectures import DISPLAY_NAMES, STUDENTS, TEACHERS
from napari_kdseg.card import ModelCard, ModelFileError
from napari_kdseg.core.errors import KdsegDataError
from napari_kdseg.distillation import terms
from napari_kdseg.teachers import TAPS

#: Environment variable that overrides the library folder.
LIBRARY_ENV = "KDSEG_MODEL_LIBRARY"
DEFAULT_LIBRARY = Path("~/.local/share/napari-kdseg/models")


def library_dir(create: bool = True) -> Path:
    """The model library folder: ``$KDSEG_MODEL_LIBRARY``, else the user's data folder.

    It is created on demand (``create``), so exporting into it always works.
    """
    configured = os.environ.get(LIBRARY_ENV, "").strip()
    folder = Path(configured).expanduser() if configured else DEFAULT_LIBRARY.expanduser()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class LibraryModel:
    """One ``.onnx`` file of the library and what its card says about it.

    ``problem`` is set (and the card fields are empty) when the file or its card is unusable.
    """

    path: Path
    architecture: str | None = None
    training_sites: tuple[str, ...] = ()
    size: int | None = None
    context: int | None = None
    validation_dice: float | None = None
    file_bytes: int = 0
    card: ModelCard | None = field(default=None, compare=False, repr=False)
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def name(self) -> str:
        return self.path.name

    def title(self) -> str:
        """What the model is, in words, for a list: ``ENet distilled from UNet++ — sites
        A–E``; the file's name when its card does not say."""
        if self.card is None or self.architecture is None:
            return self.name
        model = DISPLAY_NAMES.get(self.architecture, self.architecture)
        teacher = _teacher_name(self.card)
        what = f"{model} distilled from {teacher}" if teacher else model
        return f"{what} — {_sites_words(self.training_sites)}" if self.training_sites else what

    def summary(self) -> str:
        """The card in a clinician's words: the kind of model, where its training scans came
        from, how well it did on held-out scans, the slices it works on."""
        if self.problem is not None or self.card is None:
            return f"{self.name}: unusable ({self.problem})"
        kind = _KINDS.get(self.architecture or "", "A model")
        sites = _sites_words(self.training_sites) if self.training_sites else "unknown sites"
        synthetic = " (synthetic scans only)" if self.card.synthetic_only else ""
        sentences = [f"{kind} trained on {sites}{synthetic}."]
        if self.validation_dice is not None:
            # scored against the teacher's masks where no training scan had a mask
            taught = "validation" in (self.card.teacher_model or {})
            whose = "the teacher's outlines" if taught else "the reference outlines"
            sentences.append(
                f"On held-out scans from those sites it agreed with {whose} at Dice "
                f"{self.validation_dice:.2f} (1 is perfect)."
            )
        sentences.append(f"It reads slices resized to {self.size} × {self.size} pixels.")
        return " ".join(sentences)

    def details(self) -> str:
        """The file and the card's technical facts, one a line, for a tooltip."""
        lines = [str(self.path)]
        if self.problem is not None or self.card is None:
            return "\n".join([*lines, f"unusable: {self.problem}"])
        card = self.card
        width = f", width {card.width:g}" if card.width is not None else ""
        lines.append(f"architecture {self.architecture}{width}")
        if card.teacher_model is not None:
            lines.append(f"teacher: {card.teacher_model.get('description', card.teacher)}")
            # how the teacher taught, where the card says: its masks, which scans its losses read
            for key, what in (("labels", "labels"), ("distillation_losses", "teacher's losses")):
                if key in card.teacher_model:
                    lines.append(f"{what}: {card.teacher_model[key]}")
        elif card.teacher is not None:
            lines.append(f"teacher: {card.teacher}")
        if card.losses:
            short = terms.short_names()
            losses = ", ".join(f"{short.get(k, k)} {v}" for k, v in card.losses.items())
            lines.append(f"losses: {losses}")
        if card.training_data:
            for origin in dict.fromkeys(site.origin for site in card.training_data):
                data = [site for site in card.training_data if site.origin == origin]
                lines.append(
                    f"{origin} training sites {', '.join(site.site for site in data)}: "
                    f"{sum(site.cases for site in data)} scans, "
                    f"{sum(site.labelled for site in data)} with masks"
                )
        else:
            lines.append(f"training sites: {', '.join(self.training_sites) or 'unknown'}")
        lines.append(
            f"input {self.size}x{self.size}x{self.context} (size x size x neighbouring slices)"
        )
        if self.validation_dice is not None:
            lines.append(f"best validation Dice {self.validation_dice:.3f}")
        return "\n".join(lines)


#: What each architecture is, in words: the paper's light students and large teachers.
_KINDS = {**dict.fromkeys(STUDENTS, "A light model"), **dict.fromkeys(TEACHERS, "A large model")}


def _teacher_name(card: ModelCard) -> str | None:
    """The teacher a card's model was distilled from, as people name it (None: no teacher)."""
    teacher = card.teacher_model or {}
    if teacher.get("kind") == TAPS:
        return "TAPS"
    if teacher.get("architecture"):
        return DISPLAY_NAMES.get(teacher["architecture"], teacher["architecture"])
    return "a teacher" if card.teacher is not None else None


def _sites_words(sites: tuple[str, ...]) -> str:
    """``site A``, ``sites A–E`` (a run of letters) or ``sites A, B and D``."""
    if len(sites) == 1:
        return f"site {sites[0]}"
    letters = [ord(site) for site in sites if len(site) == 1 and site.isupper()]
    if len(letters) == len(sites) > 2 and letters == list(range(letters[0], letters[-1] + 1)):
        return f"sites {sites[0]}–{sites[-1]}"
    return f"sites {', '.join(sites[:-1])} and {sites[-1]}"


def read_model_card(path: str | Path) -> ModelCard:
    """The napari-kdseg card embedded in an ONNX file, without starting ONNX Runtime.

    Raises :class:`ModelFileError` (naming the file) when the file is not ONNX or has no card.
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError and friends
        raise ModelFileError(path, f"not a readable ONNX file ({error})") from error
    return ModelCard.from_metadata({prop.key: prop.value for prop in model.metadata_props}, path)


def describe_model(path: str | Path) -> LibraryModel:
    """A :class:`LibraryModel` for one file; problems are recorded, never raised."""
    path = Path(path)
    try:
        file_bytes = path.stat().st_size
    except OSError as error:
        return LibraryModel(path=path, problem=f"cannot be read ({error.strerror or error})")
    try:
        card = read_model_card(path)
    except KdsegDataError as error:
        return LibraryModel(path=path, file_bytes=file_bytes, problem=error.problem)
    return LibraryModel(
        path=path,
        architecture=card.architecture or None,
        training_sites=card.training_sites or (),
        size=card.preprocess.size,
        context=card.preprocess.context,
        validation_dice=card.best_val_dice,
        file_bytes=file_bytes,
        card=card,
    )


def list_models(folder: str | Path | None = None) -> list[LibraryModel]:
    """Every ``*.onnx`` file in ``folder`` (default :func:`library_dir`), sorted by name."""
    folder = library_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        return []
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() == ".onnx" and not p.name.startswith(".")
    )
    return [describe_model(path) for path in files]
