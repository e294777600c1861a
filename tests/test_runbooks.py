"""The README's runbooks, run as written.

Every fenced ``sh`` block preceded by ``<!-- runbook: NAME -->`` belongs to runbook NAME (blocks in README
order). Each line (``\\``-continued lines joined) is one step, run with bash in a temporary directory that
holds ``data/``, a copy of a fixture's data directory, and a ``keyrotate`` on PATH that runs this checkout.
Each step must exit 0. The only substitutions:

- ``/root/`` becomes ``<tmp>/root/`` (an operator's private directory);
- ``./data`` needs none: it is relative to the temporary directory;
- ``./candidate.key`` ("the key you mean to run the new version with") is provided as a copy of the fixture's
  ``data/.encryption_key``, as an operator would have it.

Lines that need a real host (``docker``, ``systemctl``, ``sudo``) are skipped, each with a warning that names
it, so a skipped step shows in pytest's summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key

from .conftest import FIXTURE_NAMES, copy_fixture

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
RUNBOOKS = ("planned-rotation", "key-leaked", "check-before-upgrade")
NEEDS_A_HOST = ("docker", "systemctl", "sudo")
_BLOCK = re.compile(r"^([ \t]*)<!-- runbook: ([\w-]+) -->[ \t]*\n\1```sh\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def runbook_steps(name: str) -> list[str]:
    steps: list[str] = []
    for indent, found, body in _BLOCK.findall(README.read_text()):
        if found != name:
            continue
        text = textwrap.dedent("\n".join(line[len(indent):] for line in body.splitlines()))
        steps.extend(line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip())
    return steps


def test_every_runbook_is_marked_in_the_readme() -> None:
    for name in RUNBOOKS:
        assert runbook_steps(name), f"README has no block marked <!-- runbook: {name} -->"


def _workspace(tmp_path: Path, fixture: str) -> tuple[Path, dict[str, str]]:
    copy = copy_fixture(fixture, tmp_path / "fixture")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(copy.data_dir, work / "data")
    (work / "root").mkdir(mode=0o700)
    shutil.copy(work / "data" / ".encryption_key", work / "candidate.key")
    os.chmod(work / "candidate.key", 0o600)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "keyrotate"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m keyrotate "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "ENCRYPTION_KEY"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO_ROOT))
    return work, env


def run_runbook(name: str, work: Path, env: dict[str, str]) -> None:
    for step in runbook_steps(name):
        if step.split()[0] in NEEDS_A_HOST:
            warnings.warn(f"runbook {name}: skipped, needs a real host: {step}", stacklevel=2)
            continue
        command = step.replace("/root/", f"{work}/root/")
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, f"runbook {name}, step `{step}` exited {done.returncode}:\n{done.stderr}"


def _files(directory: Path) -> dict[str, str]:
    """Every file and its hash; an empty -wal/-shm is SQLite's housekeeping (it deletes it on the last close)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))
            if p.is_file() and not (p.name.endswith(("-wal", "-shm")) and p.stat().st_size == 0)}


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_planned_rotation_runbook(tmp_path: Path, fixture: str) -> None:
    work, env = _workspace(tmp_path, fixture)
    run_runbook("planned-rotation", work, env)
    new_key = Key((work / "root" / "trek-new.key").read_text().strip(), "runbook's new key")
    assert (work / "data" / ".encryption_key").read_text().strip() == new_key.reveal()
    assert verify_database(work / "data" / "travel.db", [new_key]).ok


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_key_leaked_runbook(tmp_path: Path, fixture: str) -> None:
    work, env = _workspace(tmp_path, fixture)
    run_runbook("key-leaked", work, env)
    assert "- [ ] " in (work / "exposure.md").read_text()
    assert (work / "checklist.txt").read_text().startswith("Secrets readable with the suspected key:")
    new_key = Key((work / "root" / "trek-new.key").read_text().strip(), "runbook's new key")
    assert verify_database(work / "data" / "travel.db", [new_key]).ok


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_check_before_upgrade_runbook_writes_nothing_in_the_data_directory(tmp_path: Path, fixture: str) -> None:
    work, env = _workspace(tmp_path, fixture)
    before = _files(work / "data")
    run_runbook("check-before-upgrade", work, env)
    assert _files(work / "data") == before
    plan = json.loads((work / "plan.json").read_text())
    assert plan["dry_run"] is True and plan["committed"] is False
