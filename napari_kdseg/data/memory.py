"""Refuse a volume too large for this machine's memory before decoding a single voxel.

Readers know a volume's shape and stored data type from its header. Loading it holds the
stored voxels and the working copy (float32 for scans, int32 at most for label maps) at once,
so :func:`check_fits_in_memory` compares that sum with the memory available now (Linux
``MemAvailable``, capped by a cgroup v2 limit in a container; ``sysconf`` elsewhere) and raises
a :class:`~napari_kdseg.core.errors.VolumeError` giving the estimate and the memory available.
Where the available memory cannot be found the check is skipped rather than guessed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from napari_kdseg.core.errors import VolumeError

#: Bytes per voxel of the in-memory copy a reader makes: float32 scans, integer labels.
WORKING_ITEMSIZE = 4
#: Share of the available memory a single volume may take: preprocessing, the viewer and the
#: model need the rest.
USABLE_SHARE = 0.8

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def available_memory_bytes() -> int | None:
    """Memory this process can still use, in bytes, or None where it cannot be found."""
    candidates = [value for value in (_meminfo_available(), _cgroup_available()) if value]
    if not candidates:
        candidates = [value for value in (_sysconf_available(),) if value]
    return min(candidates) if candidates else None


def volume_bytes(shape: Sequence[int], stored_itemsize: int) -> int:
    """Bytes a reader holds at its peak for a volume of ``shape``: stored plus working copy."""
    voxels = math.prod(int(n) for n in shape)
    return voxels * (int(stored_itemsize) + WORKING_ITEMSIZE)


def check_fits_in_memory(
    path: str | Path, shape: Sequence[int], stored_itemsize: int, what: str = "volume"
) -> None:
    """Raise :class:`VolumeError` naming ``path`` when loading ``shape`` would not fit."""
    needed = volume_bytes(shape, stored_itemsize)
    available = available_memory_bytes()
    if available is None or needed <= USABLE_SHARE * available:
        return
    dims = " x ".join(str(int(n)) for n in shape)
    raise VolumeError(
        path,
        f"{what} too large to load: {dims} voxels of {stored_itemsize} byte(s) need about "
        f"{format_bytes(needed)} (stored data plus a {WORKING_ITEMSIZE}-byte working copy), "
        f"but only {format_bytes(available)} of memory is available; crop or downsample it "
        "first, or use a machine with more memory",
    )


def format_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _meminfo_available() -> int | None:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((_CGROUP / "memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def _sysconf_available() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None
