"""The model library: exported ONNX students in one folder, each described by its model card.

The distillation panel exports students into :func:`library_dir`; the segmentation panel lists
them with :func:`list_models`. Reading a card only parses the ONNX protobuf (no inference
session, no TensorFlow, no Qt), and a file that cannot be read is listed with its problem
instead of breaking the list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from napari_kdseg.card import ModelCard, ModelFileError
from napari_kdseg.core.errors import KdsegDataError

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

    def summary(self) -> str:
        """One short line for a list or a label: architecture, sites, input, Dice."""
        if self.problem is not None:
            return f"{self.name}: unusable ({self.problem})"
        sites = ", ".join(self.training_sites) or "unknown sites"
        dice = "n/a" if self.validation_dice is None else f"{self.validation_dice:.3f}"
        synthetic = " (synthetic scans only)" if self.card and self.card.synthetic_only else ""
        return (
            f"{self.architecture or 'unknown architecture'} trained on {sites}{synthetic}; "
            f"input {self.size}x{self.size}x{self.context}; validation Dice {dice}"
        )


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
