"""Errors of the data layer: each names the file it is about and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class KdsegDataError(Exception):
    """Base class of every data-layer error; ``path`` is the file or folder at fault."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class VolumeError(KdsegDataError):
    """A volume cannot be read or is not a usable 3D scan or mask."""


class DicomSeriesError(VolumeError):
    """A DICOM folder holds no usable series, several series, or a series with gaps."""


class DatasetError(KdsegDataError):
    """A dataset root or site folder cannot be understood."""


class DataWarning(UserWarning):
    """Something is wrong with a file, but work goes on without it (a case skipped)."""
