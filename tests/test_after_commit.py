"""The check after the COMMIT (issue 11): the texts on disk must be exactly the ones the pass wrote and checked.

A real ``keyrotate rotate`` is paused (tests/pause_at.py) between the COMMIT and the check; the test changes the
real SQLite file there, then lets it go on.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from keyrotate import crashpoints
from keyrotate.errors import ExitCode, VerificationError
from keyrotate.rotation import after_commit
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.trek.formats import Scheme
from keyrotate.trek.keys import Key

from .conftest import TrekCopy
from .crashkit import NEW_TEXT, OLD_TEXT, Scenario, environment, make_scenario
from .test_interrupts import rotate_args
from .trek_text import decrypt_text, encrypt_text

Change = Callable[[sqlite3.Connection, Scenario], None]
FAILED = "The rotation was committed but the check on a fresh connection failed: the values stored in "


def _paused_rotation(tmp_path: Path, change: Change, point: str = "after-checkpoint",
                     ) -> tuple[Scenario, subprocess.CompletedProcess[str]]:
    scenario = make_scenario(tmp_path, users=6)
    marker, go = tmp_path / "paused", tmp_path / "go"
    args = rotate_args(scenario)
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", point, str(marker), str(go),
                                *args], env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, f"never reached {point}: {process.communicate()}"
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


# after-commit: before the VACUUM, so the reading beside it sees the change; after-checkpoint: that reading is
# done, so only the check that no other connection committed since the COMMIT (data_version) can send it back.
@pytest.mark.parametrize("point", ["after-commit", "after-checkpoint"])
def test_a_stored_value_changed_after_the_commit_fails_the_check(tmp_path: Path, point: str) -> None:
    def swap_in_a_wrong_value(conn: sqlite3.Connection, scenario: Scenario) -> None:
        column, rowid, _ = _first_users_secret(conn, scenario)
        conn.execute(f'UPDATE users SET "{column}" = ? WHERE rowid = ?',
                     (encrypt_text("not the secret it was", scenario.new_key, Scheme.API), rowid))

    scenario, result = _paused_rotation(tmp_path, swap_in_a_wrong_value, point)

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


def _rotate_watching_the_reads(trek: TrekCopy, monkeypatch: pytest.MonkeyPatch, at_checkpoint: Change | None = None,
                               ) -> list[str]:
    """Rotate ``trek`` in this process; which thread read the secrets back, each time they were read.

    ``at_checkpoint`` changes the file from another connection once the -wal is emptied.
    """
    readers: list[str] = []
    compare = after_commit._compare

    def watched(*args: Any) -> str | None:
        readers.append(threading.current_thread().name)
        return compare(*args)

    def observer(point: str) -> None:
        if point == "after-checkpoint" and at_checkpoint is not None:
            with closing(sqlite3.connect(trek.db, isolation_level=None)) as conn:
                at_checkpoint(conn, trek)

    monkeypatch.setattr(after_commit, "_compare", watched)
    monkeypatch.setattr(crashpoints, "_observers", [observer])
    new_key = Key("the key after the commit check", "new test key")
    rotate_database(RotateOptions(trek.db, (trek.key,), new_key, trek.data_dir / "backup.db", workers=0))
    return readers


def test_the_reading_beside_the_vacuum_is_the_check_when_no_other_connection_commits(
        trek4: TrekCopy, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _rotate_watching_the_reads(trek4, monkeypatch) == ["keyrotate-read-back"]


def test_a_commit_by_another_connection_sends_the_check_back_to_the_file(
        trek4: TrekCopy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another program committing what holds no secret: everything is read again after the checkpoint, and passes."""
    def commit_something_else(conn: sqlite3.Connection, trek: TrekCopy) -> None:
        conn.execute("CREATE TABLE another_program (note TEXT)")
        conn.execute("INSERT INTO another_program VALUES ('no secret here')")

    readers = _rotate_watching_the_reads(trek4, monkeypatch, commit_something_else)
    assert readers == ["keyrotate-read-back", threading.main_thread().name]


def test_a_secret_changed_by_another_connection_after_the_reading_fails_the_check(
        trek4: TrekCopy, monkeypatch: pytest.MonkeyPatch) -> None:
    def blank_a_secret(conn: sqlite3.Connection, trek: TrekCopy) -> None:
        column = next(e["column"] for e in trek.manifest if e["table"] == "users" and e["scheme"] == "api")
        conn.execute(f'UPDATE users SET "{column}" = \'enc:v1:AAAA\' WHERE "{column}" LIKE \'enc:v1:%\'')

    with pytest.raises(VerificationError, match="the values stored in users"):
        _rotate_watching_the_reads(trek4, monkeypatch, blank_a_secret)


def test_a_rollback_journal_database_is_read_back_after_the_vacuum(
        trek4: TrekCopy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside WAL mode a reader would hold up the VACUUM's commit: the check waits for it."""
    with closing(sqlite3.connect(trek4.db, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    assert _rotate_watching_the_reads(trek4, monkeypatch) == [threading.main_thread().name]


def test_a_key_file_that_cannot_be_written_after_the_commit_never_says_the_new_key_was_unused(tmp_path: Path) -> None:
    """Past the COMMIT every secret is under the generated key: the error used to end with "The new key in ...
    was not used; delete it" (exit 11), and deleting it lost every secret. Now exit 13 and "keep that file";
    freeing the way and running the same command again finishes the job."""
    scenario = make_scenario(tmp_path, users=4)
    key_file, generated = scenario.data_dir / ".encryption_key", tmp_path / "generated.key"
    args = ["rotate", "--data-dir", str(scenario.data_dir), "--generate-new-key", "--new-key-out", str(generated),
            "--workers", "0", "--yes", "--json"]
    marker, go = tmp_path / "paused", tmp_path / "go"
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", "after-verify", str(marker), str(go), *args],
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, process.communicate()
    key_file.unlink()
    key_file.mkdir()  # the old key cannot be read and saved, nor the file replaced
    go.touch()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == ExitCode.INTERRUPTED_AFTER_COMMIT, stderr
    assert f"The secrets are now under the new key in {generated}: keep that file." in stderr
    assert "was not used" not in stderr and json.loads(stdout)["error"]["committed"] is True
    new = Key(generated.read_text().strip(), "generated")
    with closing(sqlite3.connect(scenario.db)) as conn:
        _first_users_secret_under(conn, scenario, new)  # the commit is done: the secrets need the generated key
    key_file.rmdir()
    key_file.write_text(OLD_TEXT)  # what the operator puts back before running the same command again
    again = subprocess.run([sys.executable, "-m", "keyrotate", *args], env=environment(), capture_output=True,
                           text=True, check=False, timeout=120)
    assert again.returncode == 0, again.stderr
    assert key_file.read_text() == new.reveal()


def _first_users_secret_under(conn: sqlite3.Connection, scenario: Scenario, key: Key) -> tuple[str, int, str]:
    secret = next(s for s in scenario.secrets if s["table"] == "users" and s["scheme"] == "api" and not s.get("json_path"))
    rowid, stored = conn.execute(f'SELECT rowid, "{secret["column"]}" FROM users WHERE id = ?',
                                 (secret["key"]["id"],)).fetchone()
    assert decrypt_text(stored, key, Scheme.API) == secret["plaintext"]
    return secret["column"], rowid, stored
