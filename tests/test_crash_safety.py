"""SIGKILL a real rotation at every named point; the database must stay whole and a rerun must finish.

The long mode (bigger database, kills at random moments, also inside COMMIT) is
``python3 scripts/crash_harness.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keyrotate.crashpoints import POINTS

from .crashkit import KillResult, State, inspect, kill_and_rerun, make_scenario, run_rotation

CASES = [*(("wal", p) for p in POINTS), ("wal", "rotate-batch:4"), ("wal", "rotate-batch:9"),
         ("wal", "backup-copy:2"),
         ("delete", "rotate-batch:4"), ("delete", "before-commit"), ("delete", "after-commit")]


def _check(result: KillResult) -> None:
    assert result.killed, f"{result.label}: the run never reached its kill point"
    assert not result.after_kill.problems, result.after_kill.problems
    assert result.survived, result


@pytest.mark.parametrize(("journal_mode", "point"), CASES, ids=[f"{j}-{p}" for j, p in CASES])
def test_kill_leaves_one_key_and_a_rerun_finishes(tmp_path: Path, journal_mode: str, point: str) -> None:
    # backup-copy:2 needs a database of more than one backup step (16 pages).
    users = 120 if point == "backup-copy:2" else 30
    scenario = make_scenario(tmp_path, users=users, journal_mode=journal_mode)
    result = kill_and_rerun(scenario, point, kill_at=point)
    _check(result)
    name = point.partition(":")[0]
    before_commit = POINTS.index(name) <= POINTS.index("before-commit")
    assert result.after_kill.under == ("old" if before_commit else "new")
    if result.after_kill.under == "new" and result.after_kill.key_file == "old":
        # Killed between the commit and the key file: the rerun says what it repaired.
        assert "now holds the new key" in result.rerun_message
    leftovers = sorted(p.name for p in scenario.data_dir.iterdir() if p.name.startswith("."))
    assert leftovers == [".encryption_key"]  # partial backups and temporary key files are cleaned up by the rerun


def test_run_after_a_finished_rotation_reports_nothing_to_do(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    assert run_rotation(scenario).returncode == 0
    again = run_rotation(scenario, quiet=False)
    assert again.returncode == 0, again.stderr
    assert "already holds the new key and every secret opens under it" in again.stderr


def test_a_malformed_or_unknown_kill_point_is_ignored(tmp_path: Path) -> None:
    for n, setting in enumerate(("rotate-batch:x", "no-such-point")):
        scenario = make_scenario(tmp_path / str(n))
        finished = run_rotation(scenario, setting)
        assert finished.returncode == 0, finished.stderr
        assert inspect(scenario) == State((), "new", "new")
