"""Runs killed after their backup but before COMMIT: the next run removes the redundant copies they left,
says so, and never touches the backup of a run that did commit."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from .crashkit import environment, inspect, make_scenario, rotate_command, run_rotation


def backups(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.glob("travel.db.keyrotate-backup-*") if p.suffix != ".key")


def test_backups_of_runs_killed_before_commit_are_removed_by_the_next_run(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    assert run_rotation(scenario, "backup-done").returncode == -signal.SIGKILL
    [first] = backups(scenario.data_dir)
    # A second attempt, killed at the same point, already clears the first one's copy: one is left, not two.
    assert run_rotation(scenario, "backup-done").returncode == -signal.SIGKILL
    leftovers = backups(scenario.data_dir)
    assert len(leftovers) == 1 and first not in leftovers
    assert inspect(scenario).under == "old"  # neither run changed the database

    rerun = run_rotation(scenario, quiet=False)

    assert rerun.returncode == 0, rerun.stderr
    for leftover in leftovers:
        assert not leftover.exists()
        assert f"Removed {leftover}: the backup of an earlier run that stopped before its commit" in rerun.stderr
    [kept] = backups(scenario.data_dir)  # this run's own backup, and nothing else
    assert kept not in leftovers
    assert sorted(p.name for p in scenario.data_dir.iterdir() if p.name.startswith(".")) == [".encryption_key"]
    assert inspect(scenario).under == "new"


def test_the_backup_of_a_run_killed_after_commit_is_kept(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    assert run_rotation(scenario, "after-commit").returncode == -signal.SIGKILL
    [backup] = backups(scenario.data_dir)

    rerun = run_rotation(scenario, quiet=False)

    assert rerun.returncode == 0, rerun.stderr
    assert backup.exists()  # the one copy under the old key
    assert "Removed" not in rerun.stderr


def test_a_dry_run_removes_nothing(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    assert run_rotation(scenario, "backup-done").returncode == -signal.SIGKILL
    [leftover] = backups(scenario.data_dir)
    dry = subprocess.run([*rotate_command(scenario), "--dry-run"], env=environment(), capture_output=True,
                         text=True, timeout=120, check=False)
    assert dry.returncode == 0, dry.stderr
    assert leftover.exists()
