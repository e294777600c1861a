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


def _worker_pids() -> list[int]:
    return [pid for pid in _children(os.getpid()) if _alive(pid)]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_worker_is_a_fresh_process_that_got_its_keys_over_its_pipe() -> None:
    """Not a fork: it maps none of this process's libraries or heap (here: SQLite, loaded by the tests), holds
    nothing of its stdin or stdout, and the key is in neither its command line nor its environment."""
    import sqlite3  # noqa: F401 - loaded here, so a forked worker would map it too

    from keyrotate.rotation.batches import BatchSpec
    from keyrotate.rotation.workers import CryptoPool
    from keyrotate.trek.formats import Cipher, Scheme
    from keyrotate.trek.keys import Key

    text = "a key that must stay out of argv and environ 7f3c"
    key = Key(text, "test key")
    before = set(_worker_pids())
    with CryptoPool((key,), 1) as pool:
        spec = BatchSpec("users.maps_api_key", "users", "maps_api_key", Scheme.API, (0,))
        handed = pool.try_submit(spec, [(1, Cipher(key, Scheme.API).seal(b"hello"))])
        assert handed is not None
        assert handed.get().opened_by == [1]  # it holds the key: it opened the value
        (worker,) = set(_worker_pids()) - before
        os.kill(worker, signal.SIGINT)  # interrupts are the parent's: the worker goes on
        after = pool.try_submit(spec, [(2, "plain")])
        assert after is not None
        assert after.get().plaintext == 1
        proc = Path(f"/proc/{worker}")
        assert text.encode() not in (proc / "cmdline").read_bytes()
        assert text.encode() not in (proc / "environ").read_bytes()
        assert "_sqlite3" not in (proc / "maps").read_text()
        for fd in (0, 1):
            assert os.readlink(proc / "fd" / str(fd)) == os.devnull
    assert worker not in _children(os.getpid())  # stopped and reaped
