"""ChildJob against fake ``kdseg`` children: events, log, cancel, failure and signal deaths."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from fake_children import BAD_INPUT, KILLED, STUBBORN, TRACEBACK, TRAINING, script

from napari_kdseg.jobs.child import LOG_NAME, ChildJob, JobEvent, JobStatus, parse_line


def _run_to_end(job: ChildJob, timeout: float = 30) -> list[JobEvent]:
    job.start()
    assert job.wait(timeout) is not None, "the fake child did not end"
    return job.drain()


def _wait_for(job: ChildJob, name: str, timeout: float = 30) -> list[JobEvent]:
    seen: list[JobEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += job.drain()
        if any(event.name == name for event in seen):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"no {name!r} event within {timeout} s; saw {[e.name for e in seen]}")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_parse_line_tells_events_from_log_lines() -> None:
    event = parse_line('{"event": "step", "step": 3, "loss": 0.5}\n')
    assert (event.name, event.fields) == ("step", {"step": 3, "loss": 0.5})
    assert parse_line('{"no_event": 1}').is_log
    assert parse_line("{not json").is_log
    assert parse_line("| Dice | C |").line == "| Dice | C |"
    # stderr is never parsed: TensorFlow may print braces there
    assert parse_line('{"event": "step"}', stream="stderr").is_log


def test_events_arrive_in_order_and_everything_is_logged(tmp_path: Path) -> None:
    argv = script(tmp_path, "training", TRAINING, STEPS=5, PAUSE=0.01)
    job = ChildJob(argv, tmp_path / "run")
    drained = _run_to_end(job)

    events = [event for event in drained if not event.is_log]
    assert [event.name for event in events] == [
        "cell",
        "start",
        *["step"] * 5,
        "epoch",
        "cell_done",
    ]
    assert [event.fields["step"] for event in events if event.name == "step"] == [1, 2, 3, 4, 5]
    assert events[1].fields["device"] == "cpu"
    logs = [(event.stream, event.line) for event in drained if event.is_log]
    assert ("stdout", "a plain line between events") in logs
    assert ("stdout", "| Dice | C |") in logs
    assert ("stderr", "some TensorFlow chatter") in logs

    assert job.status is JobStatus.FINISHED
    assert job.returncode == 0
    assert job.outcome().message == "finished"
    log = (tmp_path / "run" / LOG_NAME).read_text()
    assert '"event": "cell_done"' in log
    assert "[stderr] some TensorFlow chatter" in log
    assert "started:" in log
    assert "ended: exit status 0" in log
    assert "| Dice | C |" in job.log_tail


def test_the_child_gets_unbuffered_python_and_quiet_tensorflow(tmp_path: Path) -> None:
    source = (
        "import os; print(os.environ['PYTHONUNBUFFERED'], os.environ['TF_CPP_MIN_LOG_LEVEL'],"
        " os.environ.get('KDSEG_TEST_INHERITED'))"
    )
    (tmp_path / "env.py").write_text(source)
    os.environ["KDSEG_TEST_INHERITED"] = "yes"
    try:
        job = ChildJob([sys.executable, str(tmp_path / "env.py")], tmp_path)
        drained = _run_to_end(job)
    finally:
        del os.environ["KDSEG_TEST_INHERITED"]
    assert [event.line for event in drained] == ["1 2 yes"]


def test_the_child_runs_at_a_lower_priority_than_the_viewer(tmp_path: Path) -> None:
    (tmp_path / "nice.py").write_text("import os; print(os.nice(0))")
    job = ChildJob([sys.executable, str(tmp_path / "nice.py")], tmp_path, niceness=5)
    drained = _run_to_end(job)
    assert int(drained[0].line) == min(19, os.nice(0) + 5)


def test_cancel_stops_at_a_step_boundary_within_the_grace_period(tmp_path: Path) -> None:
    argv = script(tmp_path, "training", TRAINING, STEPS=1000, PAUSE=0.05)
    job = ChildJob(argv, tmp_path / "run", cancel_grace_s=10)
    job.start()
    seen = _wait_for(job, "step")
    started = time.monotonic()
    job.cancel()
    assert job.wait(10) == 3
    assert time.monotonic() - started < 5
    seen += job.drain()

    assert job.status is JobStatus.CANCELLED
    assert "stopped" in [event.name for event in seen]
    assert "resumes from the last checkpoint" in job.outcome().message
    assert _process_gone(job.pid or -1)
    assert "cancel requested: SIGTERM sent" in (tmp_path / "run" / LOG_NAME).read_text()


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    job = ChildJob(script(tmp_path, "stubborn", STUBBORN), tmp_path, cancel_grace_s=0.5)
    job.start()
    _wait_for(job, "start")
    started = time.monotonic()
    job.cancel()
    assert job.wait(10) == -9
    assert time.monotonic() - started < 5
    assert job.status is JobStatus.CANCELLED
    assert "killed before it reached a step boundary" in job.outcome().message


def test_bad_input_fails_with_the_one_line_error(tmp_path: Path) -> None:
    job = ChildJob(script(tmp_path, "bad_input", BAD_INPUT), tmp_path)
    _run_to_end(job)
    outcome = job.outcome()
    assert outcome.status is JobStatus.FAILED
    assert outcome.returncode == 2
    assert outcome.error_line == "kdseg loso: /nowhere: folder does not exist"
    assert (
        outcome.message == "failed with exit status 2: kdseg loso: /nowhere: folder does not exist"
    )
    assert "loading dataset" in outcome.log_tail


def test_a_traceback_fails_with_its_exception_and_tail(tmp_path: Path) -> None:
    job = ChildJob(script(tmp_path, "traceback", TRACEBACK), tmp_path)
    drained = _run_to_end(job)
    assert [event.name for event in drained if not event.is_log] == ["cell"]
    outcome = job.outcome()
    assert outcome.status is JobStatus.FAILED
    assert outcome.returncode == 1
    assert outcome.message.endswith("RuntimeError: the optimizer exploded")
    assert any(line.startswith("Traceback") for line in outcome.log_tail)
    assert "ended: exit status 1" in (tmp_path / LOG_NAME).read_text()


def test_death_by_a_signal_is_reported_with_its_name(tmp_path: Path) -> None:
    job = ChildJob(script(tmp_path, "killed", KILLED), tmp_path)
    _run_to_end(job)
    outcome = job.outcome()
    assert outcome.status is JobStatus.CRASHED
    assert outcome.returncode == -9
    assert "killed by SIGKILL" in outcome.message
    assert "out of memory" in outcome.message
    assert "ended: killed by SIGKILL" in (tmp_path / LOG_NAME).read_text()


def test_a_job_starts_once(tmp_path: Path) -> None:
    job = ChildJob(script(tmp_path, "bad_input", BAD_INPUT), tmp_path)
    assert job.status is JobStatus.NOT_STARTED
    _run_to_end(job)
    with pytest.raises(RuntimeError, match="already started"):
        job.start()
