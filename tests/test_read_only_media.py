"""Read-only commands on a data directory nobody may write: a read-only bind mount, a snapshot, a copy on
read-only media. SQLite cannot create the ``-shm`` file it reads a WAL database through; ``verify``,
``audit`` and ``exposure`` used to stop there with a traceback (exit 1)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.errors import CannotWriteError, ExitCode
from keyrotate.store import database
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key

from .conftest import TrekCopy
from .test_lifecycle import run_keyrotate


@pytest.fixture
def read_only_copy(trek4: TrekCopy, tmp_path: Path) -> Iterator[Path]:
    """trek4's data directory, bind-mounted read-only (skipped where this process may not mount)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(trek4.data_dir), str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root and CAP_SYS_ADMIN)")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("command", ["verify", "audit", "exposure"])
def test_read_only_commands_read_a_wal_database_on_a_read_only_mount(read_only_copy: Path, command: str) -> None:
    uri = f"file:{read_only_copy / 'travel.db'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn, pytest.raises(sqlite3.OperationalError, match="unable to open"):
        conn.execute("SELECT count(*) FROM users").fetchone()  # what keyrotate used to meet
    result = run_keyrotate([command, "--data-dir", str(read_only_copy)])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if command == "verify":
        assert "OK: the first key" in result.stderr


def test_a_wal_with_changes_in_a_directory_nobody_may_write_is_refused_clearly(trek4: TrekCopy,
                                                                               tmp_path: Path) -> None:
    """Immutable reading would skip the -wal's changes: keyrotate says what to do instead of reading half a database.
    The refusal itself, called as connect() calls it once SQLite cannot open the -shm."""
    copy = tmp_path / "copy"
    shutil.copytree(trek4.data_dir, copy)
    db = copy / "travel.db"
    Path(f"{db}-wal").write_bytes(b"\0" * 32)  # any content: only an empty or missing -wal may be skipped
    with pytest.raises(CannotWriteError) as caught:
        database._open_on_read_only_media(db, 1.0, True)
    assert caught.value.exit_code == ExitCode.CANNOT_WRITE and "cp -a" in str(caught.value)
    Path(f"{db}-wal").write_bytes(b"")
    with closing(database._open_on_read_only_media(db, 1.0, True)) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] > 0



def _stopped_with_changes_in_its_wal(trek: TrekCopy, tmp_path: Path, value: str) -> Path:
    """The data directory as an unclean stop leaves it: a committed change only in travel.db-wal."""
    writer = sqlite3.connect(trek.db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE users SET maps_api_key = ? WHERE id = 5", (value,))
    writer.commit()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("travel.db", "travel.db-wal", ".encryption_key"):  # copied with the writer still open
        (crashed / name).write_bytes((trek.data_dir / name).read_bytes())
    writer.close()
    assert (crashed / "travel.db-wal").stat().st_size > 0
    return crashed


@pytest.mark.parametrize("command", ["verify", "audit", "exposure"])
def test_read_only_commands_leave_a_wal_holding_changes_as_it_is(trek4: TrekCopy, tmp_path: Path,
                                                                  command: str) -> None:
    """verify, audit and exposure folded such a -wal into travel.db when they closed it (and deleted it): the
    bytes of a database (or of a stolen copy kept as evidence) changed although they only read it."""
    third = Cipher(Key("a key nobody has", "third"), Scheme.API).seal(b"only in the wal")
    crashed = _stopped_with_changes_in_its_wal(trek4, tmp_path, third)
    before = {name: (crashed / name).read_bytes() for name in ("travel.db", "travel.db-wal")}
    result = run_keyrotate([command, "--data-dir", str(crashed)])
    if command == "verify":  # the change in the -wal was read: its value opens under no key
        assert result.returncode == ExitCode.VERIFY_FAILED, result.stderr
        assert "users.maps_api_key" in result.stdout + result.stderr
    else:
        assert result.returncode == 0, result.stderr
    assert {name: (crashed / name).read_bytes() for name in before} == before


def test_a_crash_journal_on_a_read_only_mount_says_what_to_do(trek4: TrekCopy, read_only_copy: Path,
                                                                tmp_path: Path) -> None:
    """A write that stopped halfway in rollback-journal mode left travel.db-journal: even a reading must roll it
    back first. The message only said "cannot be written (attempt to write a readonly database)"."""
    crash = tmp_path / "crash"
    crash.mkdir()
    db = crash / "travel.db"
    shutil.copyfile(trek4.db, db)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA cache_size=1")  # pages spill into travel.db before the commit: the journal is needed
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE users SET username = username || '-changed'")
    for name in ("travel.db", "travel.db-journal"):  # what a power cut leaves, seen through the read-only mount
        shutil.copyfile(crash / name, trek4.data_dir / name)
    writer.execute("ROLLBACK")
    writer.close()
    for name in ("travel.db-wal", "travel.db-shm"):
        (trek4.data_dir / name).unlink(missing_ok=True)
    assert (read_only_copy / "travel.db-journal").stat().st_size > 0
    result = run_keyrotate(["verify", "--data-dir", str(read_only_copy)])
    assert result.returncode == ExitCode.CANNOT_WRITE, result.stderr
    assert "the journal of a write that stopped halfway" in result.stderr and "cp -a" in result.stderr


def test_a_dry_run_on_a_database_whose_wal_holds_changes_still_runs(trek4: TrekCopy, tmp_path: Path) -> None:
    """A rotation takes the write lock even as a dry run: a read-only connection there failed with "cannot be
    written (attempt to write a readonly database)"."""
    crashed = _stopped_with_changes_in_its_wal(trek4, tmp_path, Cipher(trek4.key, Scheme.API).seal(b"in the wal"))
    new_key = tmp_path / "new.key"
    new_key.write_text("a new key for the dry run, long enough 0123456789\n")
    new_key.chmod(0o600)
    result = run_keyrotate(["rotate", "--data-dir", str(crashed), "--new-key-file", str(new_key), "--dry-run"])
    assert result.returncode == 0, result.stderr
    assert "Dry run: nothing was written." in result.stderr
