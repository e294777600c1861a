"""The installed package carries no test switch: the kill and mark variables do nothing to ``python -m keyrotate``.

Kill points are armed only by the test launcher tests/kill_at.py (issue 9).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from keyrotate import crashpoints

from .crashkit import State, environment, inspect, make_scenario, rotate_command

PACKAGE = Path(crashpoints.__file__).resolve().parent


def test_kill_variable_does_nothing_in_a_normal_run(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path, users=8)
    mark = tmp_path / "planted-mark"
    env = environment("before-commit")
    env["KEYROTATE_TEST_MARK_AT"] = f"before-commit:{mark}"

    done = subprocess.run(rotate_command(scenario), env=env, capture_output=True, text=True, timeout=120,
                          check=False)

    assert done.returncode == 0, done.stderr  # not -9: nothing killed it
    assert inspect(scenario) == State((), "new", "new")  # rotated, key file written
    assert not mark.exists()  # the package opened no file named in the environment


def test_the_same_variable_kills_through_the_test_launcher(tmp_path: Path) -> None:
    # The other half: the variable is live, it is only the package that ignores it.
    scenario = make_scenario(tmp_path, users=8)
    done = subprocess.run(rotate_command(scenario, armed=True), env=environment("before-commit"),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -9
    assert inspect(scenario).under == "old"


def test_no_module_of_the_package_reads_a_test_variable() -> None:
    readers = [p.name for p in PACKAGE.rglob("*.py") if "KEYROTATE_TEST" in p.read_text()]
    assert readers == []
