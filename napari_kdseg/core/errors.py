"""The project's errors: each names the file it is about and what is wrong with it."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def report_data_warnings(report: Callable[[str], None]) -> Iterator[None]:
    """Hand each :class:`DataWarning` raised inside to ``report`` (a progress event, which
    the napari panel shows) rather than only to stderr; other warnings go on as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            report(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
