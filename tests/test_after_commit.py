"""The check after the COMMIT (issue 11): the texts on disk must be exactly the ones the pass wrote and checked.

A real ``keyrotate rotate`` is paused (tests/pause_at.py) between the COMMIT and the check; the test changes the
real SQLite file there, then lets it go on.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from keyrotate.errors import ExitCode
from keyrotate.trek.formats import Scheme

from .crashkit import NEW_TEXT, OLD_TEXT, Scenario, environment, make_scenario
from .test_interrupts import rotate_args
from .trek_text import decrypt_text, encrypt_text

Change = Callable[[sqlite3.Connection, Scenario], None]
FAILED = "The rotation was committed but the check on a fresh connection failed: the values stored in "


def _paused_rotation(tmp_path: Path, change: Change) -> tuple[Scenario, subprocess.CompletedProcess[str]]:
    scenario = make_scenario(tmp_path, users=6)
    marker, go = tmp_path / "paused", tmp_path / "go"
    args = rotate_args(scenario)
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", "after-checkpoint", str(marker), str(go),
                                *args], env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, f"never reached after-checkpoint: {process.communicate()}"
    try:
        with closing(sqlite3.connect(scenario.db, isolation_level=None)) as conn:
            change(conn, scenario)
    finally:
        go.touch()
    stdout, stderr = process.communicate(timeout=120)
    return scenario, subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def _first_users_secret(conn: sqlite3.Connection, scenario: Scenario) -> tuple[str, int, str]:
    """A whole-value api secret of the users table: (column, rowid, stored text), committed under the new key."""
    secret = next(s for s in scenario.secrets
                  if s["table"] == "users" and s["scheme"] == "api" and not s.get("json_path"))
    column = secret["column"]
    rowid, stored = conn.execute(f'SELECT rowid, "{column}" FROM users WHERE id = ?', (secret["key"]["id"],)).fetchone()
    assert decrypt_text(stored, scenario.new_key, Scheme.API) == secret["plaintext"]  # the commit is done
    return column, rowid, stored


def test_a_stored_value_changed_after_the_commit_fails_the_check(tmp_path: Path) -> None:
    def swap_in_a_wrong_value(conn: sqlite3.Connection, scenario: Scenario) -> None:
        column, rowid, _ = _first_users_secret(conn, scenario)
        conn.execute(f'UPDATE users SET "{column}" = ? WHERE rowid = ?',
                     (encrypt_text("not the secret it was", scenario.new_key, Scheme.API), rowid))

    scenario, result = _paused_rotation(tmp_path, swap_in_a_wrong_value)

    assert result.returncode == ExitCode.VERIFY_FAILED, result.stderr
    assert FAILED + "users." in result.stderr
    assert "Restore the backup with: cat " in result.stderr
    assert "not the secret it was" not in result.stderr + result.stdout
    assert scenario.key_file.read_text().strip() == OLD_TEXT  # the new key is not written after a failed check


def test_the_same_secret_re_encrypted_with_another_iv_after_the_commit_fails_the_check(tmp_path: Path) -> None:
    """It opens under the new key to the right plaintext, but it is not the text that was checked: a failure."""
    def re_encrypt(conn: sqlite3.Connection, scenario: Scenario) -> None:
        column, rowid, stored = _first_users_secret(conn, scenario)
        plaintext = decrypt_text(stored, scenario.new_key, Scheme.API)
        assert plaintext is not None
        again = encrypt_text(plaintext, scenario.new_key, Scheme.API)
        assert again != stored
        conn.execute(f'UPDATE users SET "{column}" = ? WHERE rowid = ?', (again, rowid))

    scenario, result = _paused_rotation(tmp_path, re_encrypt)

    assert result.returncode == ExitCode.VERIFY_FAILED, result.stderr
    assert FAILED + "users." in result.stderr
    assert scenario.key_file.read_text().strip() == OLD_TEXT


def test_an_untouched_file_passes_the_check(tmp_path: Path) -> None:
    """The same pause with nothing changed: the check passes, so the failures above are the changes'."""
    scenario, result = _paused_rotation(tmp_path, lambda conn, scenario: None)
    assert result.returncode == 0, result.stderr
    assert scenario.key_file.read_text().strip() == NEW_TEXT
