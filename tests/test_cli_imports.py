"""What a command imports at start: rotate and verify leave the exposure scan and its renderer out (issue 11).

Each case runs the real CLI in a fresh process (``python -m keyrotate``, as the benchmark times it) and lists the
modules that process imported by the time it exited.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TrekCopy

# Only --incident and the exposure/audit commands use these (~13 ms of CPU at every rotate and verify start,
# measured on the 2-core VM).
EXPOSURE_ONLY = ("keyrotate.operations.exposure", "keyrotate.cli.exposure_render")
# Printed at exit, after everything the command did: lazy imports on its path count too.
LIST_MODULES_AT_EXIT = ("import atexit, runpy, sys; "
                        "atexit.register(lambda: print('MODULES', *sorted(sys.modules), file=sys.stderr)); "
                        "sys.argv = ['keyrotate', *sys.argv[1:]]; "
                        "runpy.run_module('keyrotate', run_name='__main__')")


def _run(args: list[str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    run = subprocess.run([sys.executable, "-c", LIST_MODULES_AT_EXIT, *args], capture_output=True, text=True)
    [line] = [line for line in run.stderr.splitlines() if line.startswith("MODULES ")]
    return run, set(line.split()[1:])


@pytest.mark.parametrize("command", ["rotate", "verify"])
def test_help_does_not_import_the_exposure_scan(command: str) -> None:
    run, modules = _run([command, "--help"])
    assert run.returncode == 0
    assert run.stdout.startswith(f"Usage: keyrotate {command} [OPTIONS]")  # really that command's help
    assert f"keyrotate.cli.{command}" in modules
    assert sorted(modules & set(EXPOSURE_ONLY)) == []


def test_verify_does_not_import_the_exposure_scan(trek4: TrekCopy) -> None:
    run, modules = _run(["verify", "--data-dir", str(trek4.data_dir)])
    assert run.returncode == 0, run.stderr
    assert "keyrotate.rotation.verify" in modules  # it did verify
    assert sorted(modules & set(EXPOSURE_ONLY)) == []


def test_rotate_imports_neither_the_exposure_scan_nor_the_zip_rekeying(trek4: TrekCopy, new_key_file: Path) -> None:
    run, modules = _run(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file), "--yes"])
    assert run.returncode == 0, run.stderr
    assert (trek4.data_dir / ".encryption_key").read_text() == new_key_file.read_text().strip()  # it did rotate
    assert sorted(modules & {*EXPOSURE_ONLY, "keyrotate.operations.backup_rekey", "keyrotate.operations.jwt_secret"}) == []


def test_rotate_incident_still_imports_and_prints_the_checklist(trek4: TrekCopy, new_key_file: Path) -> None:
    """The lazy path: render() knows an exposure report once --incident has imported its module."""
    run, modules = _run(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file), "--yes",
                         "--incident", "--dry-run"])
    assert run.returncode == 0, run.stderr
    assert set(EXPOSURE_ONLY) <= modules
    assert run.stdout.startswith(f"Secrets readable with the suspected key: {len(trek4.encrypted_entries())} (")
