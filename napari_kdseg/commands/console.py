"""What people see of a long command: the event stream drawn as progress bars and sentences.

Every stage reports through :func:`napari_kdseg.core.events.emit`. With ``--json`` those events
go out as they always did, one JSON object per line (for programs: the napari panel reads
them). Otherwise :func:`human_output` hands them to :class:`EventConsole`, which draws, in a
terminal, bars for the grid's cells, the epochs and the steps of the current epoch (with the
running loss, Dice and ETA), and prints one plain sentence per thing that happened: an epoch's
metrics, a model saved, a cell scored, a warning, the report. Where stdout is not a terminal
(a pipe, CI) there are no bars, only those sentences, and the running metrics every
:data:`STEP_LINE_INTERVAL_S` seconds. Drawing is `rich`'s; nothing here changes what
``emit`` callers send.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from napari_kdseg.architectures import DISPLAY_NAMES
from napari_kdseg.core.events import Event, sent_to

#: Without a terminal, the running metrics of a training at most this often (epochs and
#: everything else are printed as they happen).
STEP_LINE_INTERVAL_S = 30.0
#: Columns of tables written where there is no terminal (a pipe, a file): it has no edge to
#: fit, and a wrapped row is harder to read or parse than a long one.
PIPE_WIDTH = 160


def add_event_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` for a command that streams events, and the mark :func:`streams_events` reads."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per progress event on stdout (for programs) instead of "
        "progress bars and sentences",
    )
    parser.set_defaults(streams_events=True)


def streams_events(args: argparse.Namespace) -> bool:
    """Whether the parsed command reports through events for :class:`EventConsole` to draw."""
    return bool(getattr(args, "streams_events", False)) and not getattr(args, "json", False)


def stdout_console() -> Console:
    """The console of human output: stdout, no guessing of what to colour in plain text."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


@contextlib.contextmanager
def counted(
    console: Console, total: int, what: str, interval_s: float = STEP_LINE_INTERVAL_S
) -> Iterator[Callable[[str], None]]:
    """Yields ``advance(label)``, called once per item done of ``total``: a bar in a terminal
    (gone once done), else ``what 3 of 12 (label)`` at most every ``interval_s`` seconds."""
    if console.is_interactive:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[label]}"),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(what, total=total, label="")
            yield lambda label: progress.update(task, advance=1, label=label)
        return
    done, last = 0, time.monotonic()

    def advance(label: str) -> None:
        nonlocal done, last
        done += 1
        if time.monotonic() - last >= interval_s and done < total:
            last = time.monotonic()
            console.print(Text(f"{what} {done} of {total} ({label})"), soft_wrap=True)

    yield advance


@contextlib.contextmanager
def human_output(console: Console | None = None) -> Iterator[EventConsole]:
    """Draw the events emitted inside on ``console`` (default stdout) instead of JSON lines."""
    renderer = EventConsole(console)
    with renderer, sent_to(renderer):
        yield renderer


class EventConsole:
    """A sink for :func:`~napari_kdseg.core.events.sent_to` that draws the events for people.

    ``live`` (default: whether ``console`` is an interactive terminal) draws progress bars;
    without it, only plain lines are printed. Unknown events are printed as ``name: fields``,
    so a new kind of event is never lost.
    """

    def __init__(
        self,
        console: Console | None = None,
        live: bool | None = None,
        step_interval_s: float = STEP_LINE_INTERVAL_S,
    ) -> None:
        self.console = console or stdout_console()
        self.live = self.console.is_interactive if live is None else live
        self.step_interval_s = step_interval_s
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._cell: Event = {}
        self._cell_started: float | None = None
        self._epochs = 0
        self._best_epoch: int | None = None
        self._last_step_line: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> EventConsole:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=28),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop drawing bars (what follows prints as usual); safe to call twice."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def __call__(self, event: Event) -> None:
        name = str(event.get("event", ""))
        fields = {key: value for key, value in event.items() if key != "event"}
        handler: Callable[[dict[str, Any]], None] = getattr(self, f"_on_{name}", None) or (
            lambda fields: self._line(_generic_line(name, fields))
        )
        handler(fields)

    # ------------------------------------------------------------------ training

    def _on_start(self, fields: dict[str, Any]) -> None:
        self._epochs = int(fields.get("epochs") or 0)
        first = int(fields.get("initial_epoch") or 0)
        self._best_epoch, self._last_step_line = None, None
        where = f"Training on {fields.get('device', 'an unknown device')}"
        if fields.get("backend"):
            where += f" ({fields['backend']}"
            replicas = int(fields.get("replicas") or 1)
            if replicas > 1:
                where += f", {fields.get('strategy')} over {replicas} replicas"
            if fields.get("mixed_precision"):
                where += ", mixed precision"
            where += ")"
        plan = f"{_count(self._epochs, 'epoch')} of {_count(fields.get('steps_per_epoch'), 'step')}"
        if first:
            plan += f", from epoch {first + 1}"
        self._line(f"{where}: {plan}")
        self._set_task("epochs", "  epochs", total=self._epochs, completed=first)
        self._set_task(
            "steps", f"  epoch {first + 1}", total=int(fields.get("steps_per_epoch") or 0)
        )

    def _on_resumed(self, fields: dict[str, Any]) -> None:
        self._line(
            f"Resuming after epoch {fields.get('epochs_done')} from {fields.get('checkpoint')}"
        )

    def _on_step(self, fields: dict[str, Any]) -> None:
        epoch, step, steps = fields.get("epoch"), fields.get("step"), fields.get("steps")
        info = _join(_metrics(fields), _eta(fields.get("eta_s")))
        self._set_task(
            "steps", f"  epoch {epoch}", total=int(steps or 0), completed=int(step or 0), info=info
        )
        if self.live:
            return
        now = _number(fields.get("time")) or time.time()
        if self._last_step_line is None:
            self._last_step_line = now  # the first line waits one interval, as later ones do
        elif now - self._last_step_line >= self.step_interval_s:
            self._last_step_line = now
            where = f"epoch {epoch}/{self._epochs or '?'}, step {step}/{steps}"
            self._line(f"  {where}: {info}")

    def _on_epoch(self, fields: dict[str, Any]) -> None:
        epoch = int(fields.get("epoch") or 0)
        epochs = int(fields.get("epochs") or self._epochs or 0)
        metrics = _metrics(fields)
        validation = _number(fields.get("val_dice"))
        if validation is not None:
            metrics = _join(metrics, f"validation Dice {validation:.3f}")
            if self._best_epoch == epoch:
                metrics += " (best so far)"
        eta = _number(fields.get("eta_s"))
        left = _eta(eta) if eta and epoch < epochs else ""
        self._line(f"Epoch {epoch}/{epochs}: {_join(metrics, left)}")
        self._set_task("epochs", "  epochs", total=epochs, completed=epoch)

    def _on_done(self, fields: dict[str, Any]) -> None:
        best = _number(fields.get("best_val_dice"))
        result = "no validation Dice" if best is None else f"best validation Dice {best:.3f}"
        self._line(
            f"Trained in {format_duration(_number(fields.get('seconds')))}: {result} "
            f"({fields.get('optimizer_steps')} optimisation steps)"
        )
        self._drop_task("epochs")
        self._drop_task("steps")

    def _on_artifact(self, fields: dict[str, Any]) -> None:
        kind, path = fields.get("kind"), fields.get("path")
        if kind == "best_checkpoint":
            self._best_epoch = int(fields.get("epoch") or 0)  # said on the epoch's line
        elif kind == "model":
            card = f" (model card {Path(str(fields['card'])).name})" if fields.get("card") else ""
            self._line(f"Saved the model to {path}{card}")
        elif kind == "onnx":
            self._line(f"Exported to ONNX: {path}")
        else:
            self._line(f"Wrote {kind or 'a file'}: {path}")

    def _on_stopped(self, fields: dict[str, Any]) -> None:
        if "reason" in fields:  # a grid or the demo, between cells
            self._line(f"Stopped: {fields['reason']}", style="yellow")
            return
        by = _signal_name(fields.get("signal"))
        self._line(
            f"Stopped by {by} after {fields.get('epochs_done')} of {self._epochs or '?'} epochs "
            f"(checkpoint {fields.get('checkpoint')}): "
            f"{fields.get('hint') or 'run the same command again to resume'}",
            style="yellow",
        )
        self._drop_task("epochs")
        self._drop_task("steps")

    def _on_warning(self, fields: dict[str, Any]) -> None:
        site = f"site {fields['site']}: " if fields.get("site") else ""
        self._line(f"Warning: {site}{fields.get('message', '')}", style="yellow")

    # ------------------------------------------------------------------ grids and the demo

    def _on_cell(self, fields: dict[str, Any]) -> None:
        self._cell = fields
        self._cell_started = _number(fields.get("time"))
        title = cell_title(fields)
        self._line(title, style="bold")
        if fields.get("cells"):
            number, cells = int(fields.get("number") or 1), int(fields["cells"])
            self._set_task("cells", title, total=cells, completed=number - 1)

    def _on_cell_done(self, fields: dict[str, Any]) -> None:
        site = self._cell.get("target")
        scores = format_dice(fields, site)
        if fields.get("skipped"):
            when = "finished in an earlier run"
        else:
            ended, started = _number(fields.get("time")), self._cell_started
            when = format_duration(None if ended is None or started is None else ended - started)
        self._line(f"  {scores}, {when}")
        if self._cell.get("cells"):
            self._set_task("cells", cell_title(self._cell), completed=int(self._cell["number"]))

    def _on_stage_progress(self, fields: dict[str, Any]) -> None:
        stage = str(fields.get("stage", "stage")).capitalize()
        done, total = int(fields.get("done") or 0), int(fields.get("total") or 0)
        self._set_task("stage", f"  {stage}", total=total, completed=done)
        if not self.live:
            self._line(f"  {stage}: {done}/{total} scans ({fields.get('case', '')})")

    def _on_stage_done(self, fields: dict[str, Any]) -> None:
        self._drop_task("stage")
        stage = str(fields.get("stage", "stage"))
        where = f" in {fields['path']}" if fields.get("path") else ""
        self._line(
            f"{stage.capitalize()} ready{where} ({format_duration(_number(fields.get('seconds')))})"
        )

    def _on_exported(self, fields: dict[str, Any]) -> None:
        what = cell_title(fields, numbered=False)
        if fields.get("skipped"):
            self._line(f"{what}: already exported to {fields.get('path')}")
            return
        difference = _number(fields.get("max_abs_difference"))
        checked = "" if difference is None else f" (max |ONNX - Keras| {difference:.1e})"
        self._line(f"{what}: exported to {fields.get('path')}{checked}")

    def _on_report(self, fields: dict[str, Any]) -> None:
        paths = {k: v for k, v in fields.items() if k not in ("time", "total_seconds")}
        main = paths.pop("table", None) or paths.pop("path", None)
        line = f"Report: {main}" if main else "Report written"
        if paths:
            line += f" (also {', '.join(str(p) for p in paths.values())})"
        if fields.get("total_seconds") is not None:
            line += f"; stages took {format_duration(_number(fields['total_seconds']))}"
        self._line(line, style="bold")

    # ------------------------------------------------------------------ drawing

    def _line(self, text: str, style: str = "") -> None:
        # soft_wrap: a long path stays on one line (a terminal wraps it, a file keeps it whole)
        self.console.print(Text(text, style=style), soft_wrap=True)

    def _set_task(self, key: str, description: str, **update: Any) -> None:
        if self._progress is None:
            return
        if key not in self._tasks:
            update.setdefault("info", "")
            self._tasks[key] = self._progress.add_task(description, **update)
        else:
            self._progress.update(self._tasks[key], description=description, **update)

    def _drop_task(self, key: str) -> None:
        if self._progress is not None and key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))


# ---------------------------------------------------------------------- tables


def aligned_table(*headers: str, text_columns: int = 2) -> Table:
    """Columns as wide as their longest entry (a long site name never runs into the next
    column), the first ``text_columns`` on the left and the rest (numbers) on the right, no
    frame to get in the way; a ``cases`` column counts as a number wherever it is."""
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
        caption_justify="left",
    )
    for number, header in enumerate(headers):
        numeric = number >= text_columns or header == "cases"
        # numbers stay whole; where the screen is too narrow, the names fold instead
        table.add_column(
            header,
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=numeric,
            min_width=len(header),
        )
    return table


# ---------------------------------------------------------------------- words


def cell_title(cell: dict[str, Any], numbered: bool = True) -> str:
    """``3 of 9: ENet distilled from UNet++ with AAM + KMM + LM, unseen site B (seed 1)``."""
    model = _display(cell.get("model"))
    variant = str(cell.get("variant") or "")
    if variant == "teacher":
        what = f"{model} teacher"
    elif variant in ("", "w/o"):
        what = f"{model} alone"
    else:
        teacher = f" from {_display(cell['teacher'])}" if cell.get("teacher") else ""
        what = f"{model} distilled{teacher} with {variant.removeprefix('+')}"
    if cell.get("target"):
        what += f", unseen site {cell['target']}"
    if cell.get("seed") is not None:
        what += f" (seed {cell['seed']})"
    if numbered and cell.get("cells"):
        what = f"{cell.get('number')} of {cell['cells']}: {what}"
    return what


def format_dice(summary: dict[str, Any], site: object = None) -> str:
    """``Dice 0.712 ± 0.048 on 4 cases of site F`` from a mean/std/n/undefined summary."""
    mean, std = _number(summary.get("mean")), _number(summary.get("std"))
    cases = _count(int(summary.get("n") or 0), "case") + (f" of site {site}" if site else "")
    if mean is None:
        return f"no Dice on {cases} (every case undefined)"
    text = f"Dice {mean:.3f} ± {std or 0.0:.3f} on {cases}"
    undefined = int(summary.get("undefined") or 0)
    return text + (f" ({undefined} undefined)" if undefined else "")


def format_duration(seconds: float | None) -> str:
    """``1 h 05 min``, ``1 min 45 s``, ``12 s`` or ``0.4 s``; ``an unknown time`` for None."""
    if seconds is None or math.isnan(seconds):
        return "an unknown time"
    if seconds < 10:
        return f"{max(0.0, seconds):.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _metrics(fields: dict[str, Any]) -> str:
    parts = []
    for key, label in (("loss", "loss"), ("dice", "Dice")):
        value = _number(fields.get(key))
        if value is not None:
            parts.append(f"{label} {value:.3f}")
    return ", ".join(parts)


def _eta(seconds: object) -> str:
    value = _number(seconds)
    return f"ETA {format_duration(value)}" if value else ""


def _count(number: object, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _join(*parts: str) -> str:
    return ", ".join(part for part in parts if part)


def _display(model: object) -> str:
    return DISPLAY_NAMES.get(str(model), str(model))


def _signal_name(number: object) -> str:
    try:
        return signal.Signals(number).name if isinstance(number, int) else "a signal"
    except ValueError:
        return f"signal {number}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _generic_line(name: str, fields: dict[str, Any]) -> str:
    shown = ", ".join(f"{key} {value}" for key, value in fields.items() if key != "time")
    return f"{name}: {shown}" if shown else name
