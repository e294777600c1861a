"""Crypto worker processes never outlive the rotation that started them (issue 8 section 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from .crashkit import Scenario, environment, make_scenario, rotate_command


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_mid_rotation(scenario: Scenario, stdout: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A real rotation with two workers, held in the middle: every value rewritten, not yet committed."""
    marker, go = scenario.data_dir.parent / "reached", scenario.data_dir.parent / "go"
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", "backup-done", str(marker), str(go),
                                *rotate_command(scenario)[3:], "--workers", "2"],
                               env=environment(), stdout=stdout, stderr=subprocess.DEVNULL)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.001)
    assert process.poll() is None, "the rotation ended before it reached the middle"
    workers = _children(process.pid)
    assert len(workers) == 2, workers
    return process, workers


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_die_with_the_killed_rotation(tmp_path: Path, signum: int) -> None:
    scenario = make_scenario(tmp_path)
    process, workers = _start_mid_rotation(scenario, subprocess.DEVNULL)
    process.send_signal(signum)
    process.wait(timeout=10)
    survivors = _gone_within(workers, 2.0)
    for pid in survivors:  # do not leave them to the next test either
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert survivors == []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_pipeline_ends_when_the_rotation_is_killed(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    process, workers = _start_mid_rotation(scenario, reader.stdin.fileno())
    reader.stdin.close()  # `keyrotate rotate ... | cat`: only keyrotate (and its workers) hold the pipe now
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    try:
        reader.wait(timeout=2)
    finally:
        if reader.poll() is None:
            reader.kill()
        for pid in _gone_within(workers, 0):
            os.kill(pid, signal.SIGKILL)
    assert reader.returncode == 0
