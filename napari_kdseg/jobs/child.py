"""A training job in a child process, streaming JSON-lines progress (no Qt, no TensorFlow).

:class:`ChildJob` starts a command (``python -m napari_kdseg loso ...``) in its own process
session, so it and anything it starts can be signalled as a group. Two reader threads copy
its stdout and stderr line by line into ``job.log`` in the run folder; stdout lines holding a
JSON object with an ``event`` key become events, every other line a log line. The owner (the
napari panel, on its GUI thread) drains :meth:`ChildJob.drain` from a timer and never blocks.

:meth:`ChildJob.cancel` sends SIGTERM: the child stops at the next optimisation step, keeps a
resumable checkpoint and exits with status 3; after a grace period it is killed outright.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: Exit status of a command stopped by SIGTERM/SIGINT (``napari_kdseg.commands.EXIT_STOPPED``).
EXIT_STOPPED = 3
#: Name of the log file written in the run folder.
LOG_NAME = "job.log"
#: Log lines kept in memory for :attr:`ChildJob.log_tail`.
TAIL_LINES = 200
#: Seconds a cancelled child gets to reach a step boundary before it is killed.
CANCEL_GRACE_S = 30.0
#: Scheduling niceness added to the child: training yields the CPU to the viewer it serves.
CHILD_NICENESS = 10
_ERROR_LINE = re.compile(r"^kdseg [\w-]+: .+")


class JobStatus(enum.Enum):
    """Where a job stands; the last four are final."""

    NOT_STARTED = "not started"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"
    CRASHED = "crashed"

    @property
    def final(self) -> bool:
        return self in (
            JobStatus.FINISHED,
            JobStatus.CANCELLED,
            JobStatus.FAILED,
            JobStatus.CRASHED,
        )


@dataclass(frozen=True)
class JobEvent:
    """One line of the child's output: a progress event, or a plain log line.

    ``name`` is the event's ``event`` key (``"log"`` for a plain line); ``fields`` the rest of
    the JSON object; ``stream`` is ``"stdout"`` or ``"stderr"``.
    """

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    line: str = ""
    stream: str = "stdout"

    @property
    def is_log(self) -> bool:
        return self.name == "log"


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended, for people: status, a one-line summary and the evidence."""

    status: JobStatus
    returncode: int | None
    message: str
    error_line: str | None = None
    log_tail: tuple[str, ...] = ()


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment with unbuffered Python and quiet TensorFlow."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(extra or {})}


def parse_line(line: str, stream: str = "stdout") -> JobEvent:
    """An event for a JSON object with an ``event`` key on stdout, else a log line."""
    text = line.rstrip("\r\n")
    if stream == "stdout" and text.startswith("{"):
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("event"), str):
            name = record.pop("event")
            return JobEvent(name=name, fields=record, line=text, stream=stream)
    return JobEvent(name="log", line=text, stream=stream)


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9, and so on; the number when Python does not know it."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class ChildJob:
    """One child process, its log file and its event queue.

    Typical use from a GUI timer::

        job = ChildJob([sys.executable, "-m", "napari_kdseg", "loso", ...], run_folder)
        job.start()
        ...  # every 100 ms:
        for event in job.drain():
            ...
        if job.status.final:
            outcome = job.outcome()
    """

    def __init__(
        self,
        argv: Sequence[str],
        run_folder: str | Path,
        env: dict[str, str] | None = None,
        cancel_grace_s: float = CANCEL_GRACE_S,
        niceness: int = CHILD_NICENESS,
    ) -> None:
        self.argv = [str(part) for part in argv]
        self.run_folder = Path(run_folder)
        self.log_path = self.run_folder / LOG_NAME
        self.cancel_grace_s = cancel_grace_s
        self.niceness = niceness
        self._env = child_environment(env)
        self._events: queue.SimpleQueue[JobEvent] = queue.SimpleQueue()
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._error_line: str | None = None
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._log: IO[str] | None = None
        self._cancel_requested = False
        self._killed = False
        self._returncode: int | None = None
        self._ended = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the child; the log file is appended to, so a resumed run keeps its history."""
        if self._process is not None:
            raise RuntimeError("this job was already started; make a new ChildJob to rerun")
        self.run_folder.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8")
        self._write_log(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} started: {' '.join(self.argv)}")
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=self._env,
            start_new_session=True,
        )
        self._lower_priority()
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read, args=(pipe, name), name=f"kdseg-job-{name}", daemon=True
            )
            for pipe, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr"))
        ]
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._watch, name="kdseg-job-watch", daemon=True).start()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the child ended and all its output was read, else None.

        Negative: killed by that signal number.
        """
        with self._lock:
            return self._returncode

    @property
    def status(self) -> JobStatus:
        if self._process is None:
            return JobStatus.NOT_STARTED
        code = self.returncode
        if code is None:
            return JobStatus.RUNNING
        if code == 0:
            return JobStatus.FINISHED
        if code == EXIT_STOPPED or (self._cancel_requested and code < 0):
            return JobStatus.CANCELLED
        if code < 0:
            return JobStatus.CRASHED
        return JobStatus.FAILED

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the child ended and its output was read (tests, scripts); its status."""
        self._ended.wait(timeout)
        return self.returncode

    def cancel(self) -> None:
        """Ask the child to stop at a step boundary (SIGTERM), and kill it after the grace period.

        Returns at once; a watcher thread does the waiting and the killing.
        """
        if self._process is None or self._process.poll() is not None or self._cancel_requested:
            return
        self._cancel_requested = True
        self._write_log("# cancel requested: SIGTERM sent")
        self._signal_group(signal.SIGTERM)
        threading.Thread(
            target=self._kill_after_grace, name="kdseg-job-cancel", daemon=True
        ).start()

    def kill(self) -> None:
        """Kill the child's process group at once (the viewer is closing)."""
        if self._process is not None and self._process.poll() is None:
            self._cancel_requested = self._killed = True
            self._write_log("# killed: SIGKILL sent")
            self._signal_group(signal.SIGKILL)

    # ------------------------------------------------------------------ output

    def drain(self, limit: int | None = None) -> list[JobEvent]:
        """The events (and log lines) read since the last call, oldest first; never blocks."""
        drained: list[JobEvent] = []
        while limit is None or len(drained) < limit:
            try:
                drained.append(self._events.get_nowait())
            except queue.Empty:
                break
        return drained

    @property
    def log_tail(self) -> list[str]:
        """The last :data:`TAIL_LINES` lines of stdout and stderr, interleaved as read."""
        with self._lock:
            return list(self._tail)

    @property
    def error_line(self) -> str | None:
        """The child's last one-line error (``kdseg loso: <problem>``), if it wrote one."""
        with self._lock:
            return self._error_line

    def outcome(self) -> JobOutcome:
        """Status with a message for people; meaningful once :attr:`status` is final."""
        status, code = self.status, self.returncode
        tail = tuple(self.log_tail[-40:])
        error = self.error_line
        if status is JobStatus.FINISHED:
            message = "finished"
        elif status is JobStatus.CANCELLED:
            how = (
                "killed before it reached a step boundary" if self._killed else "stopped at a step"
            )
            message = f"cancelled ({how}); starting again resumes from the last checkpoint"
        elif status is JobStatus.CRASHED:
            assert code is not None
            name = signal_name(-code)
            hint = " (the system may have run out of memory)" if -code == signal.SIGKILL else ""
            message = f"crashed: the training process was killed by {name}{hint}"
        elif status is JobStatus.FAILED:
            last = error or _last_traceback_line(tail) or "see the log"
            message = f"failed with exit status {code}: {last}"
        else:
            message = status.value
        return JobOutcome(status, code, message, error, tail)

    # ------------------------------------------------------------------ internals

    def _read(self, pipe: IO[str], stream: str) -> None:
        for line in pipe:
            event = parse_line(line, stream)
            text = event.line
            with self._lock:
                self._tail.append(text)
                if stream == "stderr" and _ERROR_LINE.match(text):
                    self._error_line = text
            self._write_log(text if stream == "stdout" else f"[stderr] {text}")
            self._events.put(event)
        pipe.close()

    def _write_log(self, text: str) -> None:
        with self._lock:
            if self._log is not None and not self._log.closed:
                self._log.write(text + "\n")
                self._log.flush()

    def _watch(self) -> None:
        """Once both pipes are drained and the child reaped: close the log, set the status."""
        assert self._process is not None
        for reader in self._readers:
            reader.join()
        code = self._process.wait()
        ending = f"exit status {code}" if code >= 0 else f"killed by {signal_name(-code)}"
        self._write_log(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} ended: {ending}")
        with self._lock:
            if self._log is not None:
                self._log.close()
            self._returncode = code
        self._ended.set()

    def _lower_priority(self) -> None:
        """Renice the child while it is still one thread: the threads it starts inherit it."""
        assert self._process is not None
        if self.niceness <= 0:
            return
        with contextlib.suppress(OSError):
            current = os.getpriority(os.PRIO_PROCESS, self._process.pid)
            os.setpriority(os.PRIO_PROCESS, self._process.pid, min(19, current + self.niceness))

    def _signal_group(self, number: int) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, number)

    def _kill_after_grace(self) -> None:
        assert self._process is not None
        try:
            self._process.wait(self.cancel_grace_s)
        except subprocess.TimeoutExpired:
            self._killed = True
            self._write_log(f"# no stop within {self.cancel_grace_s:g} s: SIGKILL sent")
            self._signal_group(signal.SIGKILL)


def _last_traceback_line(lines: Sequence[str]) -> str | None:
    """The exception line closing a Python traceback (``ValueError: ...``), if any."""
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*", line):
            return line
    return None


def python_command(*arguments: str) -> list[str]:
    """``python -m napari_kdseg ARGUMENTS`` with this interpreter, whatever PATH says."""
    return [sys.executable, "-m", "napari_kdseg", *arguments]
