"""Write files so a crash never leaves a half-written result under the final name."""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name next to ``path`` that ends like it (``.nii.gz``, ``.weights.h5``),
    since writers choose their format from the name."""
    suffixes = "".join(path.suffixes)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffixes}", dir=path.parent)
    os.close(fd)
    return Path(name)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete what a killed writer left in ``folder`` (its temporary siblings); returns them.

    Only for a folder one process writes: a live writer's temporary would go too.
    """
    stale = [p for p in folder.glob(".*.tmp*") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed onto ``path``.

    The rename is atomic on POSIX filesystems, so readers see either the old file or the
    complete new one. On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp made it private (0600); give it a new file's permissions
            tmp.chmod(0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class VersionedWrite:
    """What :func:`versioned_path` hands out: ``tmp`` to write, then ``path``, where it went."""

    tmp: Path
    path: Path


@contextlib.contextmanager
def versioned_path(path: str | Path) -> Iterator[VersionedWrite]:
    """Like :func:`atomic_path`, but an existing file is never replaced.

    The result lands on ``path`` when nothing is there. When ``path`` or one of its versions
    (``stem-2.ext``, ``stem-3.ext``, ...) already holds the same bytes, nothing is written and
    that file is the result, so a rerun that changes nothing adds nothing. Otherwise it becomes
    the next free version: a report a user kept, annotated or cited is never lost to a rerun.
    ``written.path`` is the result's path once the block has ended.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        written = VersionedWrite(tmp, path)
        yield written
        tmp.chmod(0o666 & ~current_umask())
        written.path = _place_version(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _place_version(tmp: Path, path: Path) -> Path:
    while True:
        for version in versions(path):
            if filecmp.cmp(tmp, version, shallow=False):
                return version
        target = free_name(path)
        try:
            os.link(tmp, target)  # unlike a rename, fails rather than replace a newcomer
        except FileExistsError:
            continue  # another writer took that name first: look again
        except OSError:  # a filesystem without hard links
            os.replace(tmp, target)
        return target


def versions(path: Path) -> list[Path]:
    """``path`` and its numbered versions ``stem-N.ext`` that exist, in order."""
    found, candidate, number = [], path, 1
    while candidate.exists():
        found.append(candidate)
        number += 1
        candidate = _numbered(path, number)
    return found


def free_name(path: Path) -> Path:
    """``path`` if nothing is there, else the first free ``stem-N.ext`` beside it."""
    number = len(versions(path)) + 1
    return path if number == 1 else _numbered(path, number)


def _numbered(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name.removesuffix(path.suffix)}-{number}{path.suffix}")


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` sets it, racing threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
