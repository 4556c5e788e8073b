"""Export the students of a finished grid into a model library folder, ready to segment with.

Each student becomes ``<cell folder>-unseen-<target>.onnx`` (e.g.
``enet-from-unetpp-AAM-KMM-LM-unseen-B.onnx``), checked against Keras on a scan of the site it
never saw. A file already in the library is never replaced: a new export of the same cell gets
the next free name (``...-2.onnx``). Each cell remembers its export in ``exported.json``, so
running the grid again does not export it twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_kdseg.core.atomic import atomic_path, free_name
from napari_kdseg.core.events import emit
from napari_kdseg.data.datasets import Dataset
from napari_kdseg.data.io import read_volume
from napari_kdseg.experiments.grid import CellResult
from napari_kdseg.export.onnx_export import export_onnx


def export_students(
    results: Sequence[CellResult],
    dataset: Dataset,
    library: Path,
) -> list[Path]:
    """Export every student of ``results`` to ``library``; returns the ONNX paths."""
    library.mkdir(parents=True, exist_ok=True)
    paths = []
    for result in results:
        if result.cell.role != "student":
            continue
        cell = result.cell
        record = Path(result.model_path).parent / "exported.json"
        previous = _previous_export(record)
        fields: dict[str, Any] = {"model": cell.model, "variant": cell.variant}
        fields |= {"target": cell.target, "teacher": cell.teacher}
        if previous is not None:
            emit("exported", path=str(previous), skipped=True, **fields)
            paths.append(previous)
            continue
        path = free_name(library / f"{cell.folder.name}-unseen-{cell.target}.onnx")
        check_scan = read_volume(dataset.cases([cell.target])[0].image)
        report = export_onnx(Path(result.model_path), path, check_inputs=check_scan)
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps({"path": str(path)}))
        emit(
            "exported",
            path=str(path),
            skipped=False,
            max_abs_difference=report.max_abs_difference,
            **fields,
        )
        paths.append(path)
    return paths


def _previous_export(record: Path) -> Path | None:
    """The library file this cell was exported to, while it is still there."""
    if not record.is_file():
        return None
    path = Path(json.loads(record.read_text())["path"])
    return path if path.is_file() else None
