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
from keyrotate.trek.keys import Key

from .conftest import TrekCopy
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


def _plugin_table_without_primary_key(conn: sqlite3.Connection, key: Key) -> dict[str, str]:
    """A plugin table with neither primary key nor index (its rowids are VACUUM's to renumber) holding
    tokens under ``key`` between rows that are deleted again; the tokens' plaintexts by owner."""
    conn.execute("CREATE TABLE plugin_notes (owner TEXT, note TEXT)")
    secrets = {}
    for n in range(12):
        conn.executemany("INSERT INTO plugin_notes VALUES ('filler', ?)", [(f"filler {i}",) for i in range(50)])
        secrets[f"owner {n}"] = f"plugin secret {n}"
        conn.execute("INSERT INTO plugin_notes VALUES (?, ?)",
                     (f"owner {n}", encrypt_text(secrets[f"owner {n}"], key, Scheme.API)))
    conn.execute("DELETE FROM plugin_notes WHERE owner = 'filler'")
    return secrets


def _token_rowids(conn: sqlite3.Connection) -> list[int]:
    return [rowid for (rowid,) in conn.execute("SELECT rowid FROM plugin_notes ORDER BY owner")]


def test_tokens_in_a_table_whose_rowids_vacuum_renumbers_pass_the_check(trek: TrekCopy, new_key_file: Path,
                                                                         tmp_path: Path) -> None:
    """SQLite: VACUUM "may change the ROWIDs of entries in any tables that do not have an explicit INTEGER
    PRIMARY KEY". The check after the VACUUM must not count a renumbered row as a changed value."""
    with closing(sqlite3.connect(trek.db, isolation_level=None)) as conn:
        secrets = _plugin_table_without_primary_key(conn, trek.key)
        before = _token_rowids(conn)
        with closing(sqlite3.connect(tmp_path / "scratch.db", isolation_level=None)) as scratch:
            conn.backup(scratch)
            scratch.execute("VACUUM")
            assert _token_rowids(scratch) != before  # VACUUM really renumbers this table: the test tests something
    result = subprocess.run([sys.executable, "-m", "keyrotate", "rotate", "--data-dir", str(trek.data_dir),
                             "--new-key-file", str(new_key_file), "--yes", "--quiet"],
                            env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == ExitCode.OK, result.stderr
    new_key = Key(new_key_file.read_text().strip(), "new key")
    with closing(sqlite3.connect(trek.db)) as conn:
        assert _token_rowids(conn) != before  # the rotation's VACUUM renumbered them
        stored = dict(conn.execute("SELECT owner, note FROM plugin_notes").fetchall())
    assert {owner: decrypt_text(text, new_key, Scheme.API) for owner, text in stored.items()} == secrets
