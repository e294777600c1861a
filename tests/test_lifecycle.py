"""Key lifecycle: the new key is on disk before the database is touched, and the operator is told what's next."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key, create_key_file

from .conftest import TrekCopy, copy_fixture, listing

REPO_ROOT = Path(__file__).resolve().parent.parent


def fingerprint(directory: Path) -> dict[str, str]:
    """Every file of the data directory and its bytes (as a hash)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def run_keyrotate(args: list[str], *, kill_at: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess; ``kill_at``: through tests/kill_at.py, SIGKILLed at that named step."""
    environment = {k: v for k, v in os.environ.items() if k != "ENCRYPTION_KEY"}
    environment.update(env, PYTHONPATH=str(REPO_ROOT))
    module = "keyrotate"
    if kill_at is not None:
        environment["KEYROTATE_TEST_KILL_AT"] = kill_at
        module = "tests.kill_at"
    return subprocess.run([sys.executable, "-m", module, *args], env=environment, capture_output=True,
                          text=True, check=False, timeout=120)


def test_killed_right_after_key_generation_leaves_key_saved_and_database_untouched(
    trek3: TrekCopy, tmp_path: Path
) -> None:
    before = fingerprint(trek3.data_dir)
    old_key = trek3.key
    key_file = tmp_path / "new.key"
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--generate-new-key", "--new-key-out", str(key_file), "--yes"]

    crashed = run_keyrotate(args, kill_at="after-new-key")

    assert crashed.returncode == -9, crashed.stderr  # SIGKILL: no cleanup ran
    assert re.fullmatch(r"[0-9a-f]{64}\n", key_file.read_text())
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert fingerprint(trek3.data_dir) == before  # no backup, no -wal, no new .encryption_key, same bytes
    assert verify_database(trek3.db, [old_key]).ok

    # The saved key is the one to carry on with.
    resumed = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(key_file)])
    assert resumed.returncode == 0, resumed.stderr
    assert verify_database(trek3.db, [Key(key_file.read_text().strip(), "saved key")]).ok


@pytest.mark.parametrize("point", ["after-commit", "after-verify", "key-file-renamed"])
def test_generate_new_key_killed_after_the_commit_finishes_when_the_same_command_runs_again(
    trek3: TrekCopy, tmp_path: Path, point: str
) -> None:
    """The leak runbook's command, SIGKILLed after its commit, then run again as its "Writing now" line says."""
    old_key = trek3.key
    key_file = tmp_path / "g.key"
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--generate-new-key", "--new-key-out", str(key_file), "--yes"]
    crashed = run_keyrotate(args, kill_at=point)
    assert crashed.returncode == -9, crashed.stderr
    line = next(line for line in crashed.stderr.splitlines() if line.startswith("Writing now."))
    printed = shlex.split(line.split("run this command: ", 1)[1].rsplit(": it finishes the job.", 1)[0])
    assert printed[:2] == ["keyrotate", "rotate"] and printed[-2:] == ["--new-key-file", str(key_file)]
    generated = key_file.read_text()
    new_key = Key(generated.strip(), "generated")
    assert verify_database(trek3.db, [new_key]).ok  # committed under the generated key

    again = run_keyrotate(printed[1:])

    assert again.returncode == 0, again.stderr
    assert key_file.read_text() == generated  # never overwritten
    assert (trek3.data_dir / ".encryption_key").read_text() == new_key.reveal()
    assert run_keyrotate(["verify", "--data-dir", str(trek3.data_dir)]).returncode == 0  # TREK reads every secret
    assert verify_database(trek3.db, [old_key]).opened_by_first == 0
    for key in (old_key, new_key):
        assert key.reveal() not in again.stderr + again.stdout


@pytest.mark.parametrize("point", ["after-verify", "key-file-renamed"])
def test_leak_runbook_killed_after_the_commit_still_gets_its_checklist_on_the_rerun(
    tmp_path: Path, point: str
) -> None:
    """The rerun of the leak runbook's command lists what the old key opened, not the rotated file's zero."""
    def runbook(trek: TrekCopy) -> list[str]:
        return ["rotate", "--data-dir", str(trek.data_dir), "--generate-new-key", "--new-key-out",
                str(trek.data_dir.parent / "g.key"), "--rekey-backups", "--incident", "--rotate-jwt-secret"]

    reference, killed = copy_fixture("trek-4.2-shape", tmp_path / "a"), copy_fixture("trek-4.2-shape", tmp_path / "b")
    whole = run_keyrotate(runbook(reference))
    assert whole.returncode == 0, whole.stderr
    assert run_keyrotate(runbook(killed), kill_at=point).returncode == -9

    again = run_keyrotate(runbook(killed))

    assert again.returncode == 0, again.stderr
    first = again.stdout.splitlines()[0]
    assert first.startswith("Secrets readable with the suspected key: ") and not first.endswith(": 0")
    assert first.split(", opened with")[0] == whole.stdout.splitlines()[0].split(", opened with")[0]
    assert "the earlier run's copy from before its rotation" in again.stderr


def test_generate_new_key_rerun_before_any_commit_refuses_and_says_what_to_do(
    trek3: TrekCopy, tmp_path: Path
) -> None:
    key_file = tmp_path / "g.key"
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--generate-new-key", "--new-key-out", str(key_file), "--yes"]
    assert run_keyrotate(args, kill_at="after-new-key").returncode == -9
    generated = key_file.read_text()
    before = fingerprint(trek3.data_dir)
    del before["travel.db-wal"]  # empty: SQLite removes it when the read-only check closes the database

    again = run_keyrotate(args)

    assert again.returncode == 6, again.stderr
    assert "will not overwrite" in again.stderr
    assert f"--new-key-file {key_file}" in again.stderr and "another --new-key-out path" in again.stderr
    assert key_file.read_text() == generated
    assert fingerprint(trek3.data_dir) == before
    assert generated.strip() not in again.stderr


def test_generate_refuses_to_overwrite_and_touches_nothing(trek4: TrekCopy, tmp_path: Path) -> None:
    key_file = tmp_path / "new.key"
    create_key_file(key_file, "an existing key someone relies on")
    before = fingerprint(trek4.data_dir)
    result = CliRunner().invoke(
        main, ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out", str(key_file)],
        catch_exceptions=False,
    )
    assert result.exit_code == 6
    assert "will not overwrite" in result.stderr
    assert key_file.read_text() == "an existing key someone relies on\n"
    assert fingerprint(trek4.data_dir) == before


def test_failed_rotation_says_the_generated_key_was_not_used(trek4: TrekCopy, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.key"
    create_key_file(wrong, "not the key of this database")
    key_file = tmp_path / "new.key"
    result = CliRunner().invoke(
        main, ["rotate", "--db", str(trek4.db), "--old-key-file", str(wrong), "--generate-new-key",
               "--new-key-out", str(key_file)],
        catch_exceptions=False,
    )
    assert result.exit_code == 7
    assert f"The new key in {key_file} was not used" in result.stderr
    assert key_file.exists()


def test_jwt_secret_fallback_is_explained(trek4: TrekCopy, tmp_path: Path) -> None:
    (trek4.data_dir / ".jwt_secret").write_text(trek4.key.reveal() + "\n")
    (trek4.data_dir / ".encryption_key").unlink()
    key_file = tmp_path / "new.key"
    result = CliRunner().invoke(
        main, ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out", str(key_file)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert ".encryption_key is missing" in result.stderr and "session-signing secret" in result.stderr
    new_key = Key(key_file.read_text().strip(), "generated")
    assert (trek4.data_dir / ".encryption_key").read_text() == new_key.reveal()
    assert verify_database(trek4.db, [new_key]).ok


def test_shell_still_holding_the_old_key_is_warned_with_next_steps(trek4: TrekCopy, tmp_path: Path) -> None:
    old = trek4.key.reveal()
    key_file = tmp_path / "new.key"
    result = CliRunner(env={"ENCRYPTION_KEY": old}).invoke(
        main, ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out", str(key_file)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert "ENCRYPTION_KEY in this shell holds the old key" in result.stderr
    assert "`unset ENCRYPTION_KEY`" in result.stderr
    assert "docker compose up -d trek" in result.stderr and "systemctl daemon-reload" in result.stderr
    assert old not in result.output and key_file.read_text().strip() not in result.output


def test_no_shell_warning_when_the_environment_is_clean(trek4: TrekCopy, tmp_path: Path) -> None:
    key_file = tmp_path / "new.key"
    files = listing(trek4.data_dir)
    result = CliRunner(env={"ENCRYPTION_KEY": ""}).invoke(
        main, ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out", str(key_file)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert "holds the old key" not in result.stderr and "unset ENCRYPTION_KEY" not in result.stderr
    assert len(listing(trek4.data_dir) - files) == 2  # the keyrotate backup and the old key saved beside it


@pytest.mark.parametrize("point", ["after-commit", "after-verify"])
def test_an_explicit_backup_path_does_not_stop_the_rerun_that_finishes_the_job(
    trek3: TrekCopy, new_key_file: Path, tmp_path: Path, point: str
) -> None:
    """With --backup PATH, the same command again used to stop at "Backup PATH already exists" (exit 11), leaving
    TREK on the old key file with a database under the new key. The rerun makes no backup, so none is in its way."""
    backup, old_key = tmp_path / "before-rotation.db", trek3.key  # (trek3.key reads .encryption_key)
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file), "--backup", str(backup),
            "--yes"]
    crashed = run_keyrotate(args, kill_at=point)
    assert crashed.returncode == -9, crashed.stderr
    kept = hashlib.sha256(backup.read_bytes()).hexdigest()

    again = run_keyrotate(args)

    assert again.returncode == 0, again.stderr
    assert (trek3.data_dir / ".encryption_key").read_text().strip() == new_key_file.read_text().strip()
    assert run_keyrotate(["verify", "--data-dir", str(trek3.data_dir)]).returncode == 0
    assert hashlib.sha256(backup.read_bytes()).hexdigest() == kept  # the first run's backup, untouched
    assert verify_database(backup, [old_key]).ok  # the database as it was, under the old key


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_backup_path_taken_by_another_file_stops_the_run_and_keeps_that_file(
    trek3: TrekCopy, new_key_file: Path, tmp_path: Path, journal_mode: str
) -> None:
    """Refused when the backup is made (not up front any more): nothing written, and the file there neither
    marked as a leftover of this run nor deleted with the copy that was never made."""
    with closing(sqlite3.connect(trek3.db)) as conn:
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
    taken = tmp_path / "taken.db"
    taken.write_text("somebody else's file\n")
    before = fingerprint(trek3.data_dir)
    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                            "--backup", str(taken), "--yes"])
    assert result.returncode == 11, result.stderr
    assert f"Backup {taken} already exists" in result.stderr
    assert taken.read_text() == "somebody else's file\n"
    assert fingerprint(trek3.data_dir) == before
    assert not list(trek3.data_dir.glob(".*uncommitted*"))
