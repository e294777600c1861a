"""Rotation and verification against real TREK databases (copies of the fixtures)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.errors import ExitCode, KeyProblemError, UndecryptableError, WrongKeyError
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key

from .conftest import TrekCopy, listing, opens_under, stored_value, table_dump

NEW = Key("a brand new key for the tests", "new test key")


def rotate(trek: TrekCopy, *, old: tuple[Key, ...] | None = None, **kwargs: object) -> object:
    backup = kwargs.pop("backup", trek.data_dir / "backup.db")
    options = RotateOptions(trek.db, old or (trek.key,), NEW, backup, **kwargs)  # type: ignore[arg-type]
    return rotate_database(options)


def test_rotation_moves_every_secret_to_the_new_key(trek: TrekCopy) -> None:
    report = rotate(trek)
    entries = trek.encrypted_entries()
    assert report.committed and report.verified_after_commit
    assert report.rotated == len(entries)
    with closing(sqlite3.connect(trek.db)) as conn:
        for entry in entries:
            assert opens_under(conn, entry, NEW), entry
            assert not opens_under(conn, entry, trek.key), entry
        # Plaintext locations are left exactly as they were.
        for entry in trek.manifest:
            if entry["scheme"] in ("plain", "legacy-plain"):
                assert stored_value(conn, entry) == entry["plaintext"]


def test_second_rotation_is_a_no_op(trek: TrekCopy) -> None:
    rotate(trek)
    before = table_dump(trek.db)
    files = listing(trek.data_dir)
    again = rotate(trek, old=(trek.key,), backup=trek.data_dir / "second-backup.db")
    assert again.rotated == 0
    assert again.already_new == len(trek.encrypted_entries())
    assert not again.committed
    assert table_dump(trek.db) == before
    assert listing(trek.data_dir) == files  # no second backup for a run that writes nothing


def test_verify_agrees_before_and_after(trek: TrekCopy) -> None:
    n = len(trek.encrypted_entries())
    before = verify_database(trek.db, [trek.key, NEW])
    assert before.ok and before.catalogued_tokens == n
    rotate(trek)
    old_first = verify_database(trek.db, [trek.key, NEW])
    assert not old_first.ok
    assert old_first.opened_by_first == 0
    assert old_first.to_json()["totals"]["open_under_other_keys"] == n
    assert verify_database(trek.db, [NEW]).ok


def test_dry_run_changes_nothing_and_adds_no_file(trek: TrekCopy) -> None:
    before = table_dump(trek.db)
    files = listing(trek.data_dir)
    report = rotate(trek, dry_run=True, backup=None)
    assert report.dry_run and not report.committed
    assert report.rotated == len(trek.encrypted_entries())
    assert table_dump(trek.db) == before
    assert listing(trek.data_dir) <= files


def test_wrong_old_key_writes_nothing(trek: TrekCopy) -> None:
    before = table_dump(trek.db)
    files = listing(trek.data_dir)
    with pytest.raises(WrongKeyError) as raised:
        rotate(trek, old=(Key("not the key", "wrong key"),))
    assert raised.value.exit_code == ExitCode.WRONG_KEY
    assert f"opens 0 of {len(trek.encrypted_entries())}" in raised.value.message
    assert table_dump(trek.db) == before
    assert listing(trek.data_dir) <= files


def test_same_old_and_new_key_is_refused(trek4: TrekCopy) -> None:
    with pytest.raises(KeyProblemError):
        rotate_database(RotateOptions(trek4.db, (trek4.key,), Key(trek4.key.reveal(), "same"), None))


def _reencrypt_some_under(trek: TrekCopy, key: Key, table: str, column: str) -> int:
    """Simulate an interrupted foreign rotation: one column's values under another key."""
    with closing(sqlite3.connect(trek.db)) as conn:
        rows = conn.execute(f"SELECT rowid, {column} FROM {table} WHERE {column} LIKE 'enc:v1:%'").fetchall()
        old, other = Cipher(trek.key, Scheme.API), Cipher(key, Scheme.API)
        for rowid, value in rows:
            plaintext = old.open(value)
            assert plaintext is not None
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (other.seal(plaintext), rowid))
        conn.commit()
    return len(rows)


def test_database_under_two_old_keys_rotates_when_both_are_given(trek: TrekCopy) -> None:
    second = Key("the key of an interrupted run", "second old key")
    moved = _reencrypt_some_under(trek, second, "trek_photos", "passphrase")
    assert moved > 0
    before = table_dump(trek.db)
    with pytest.raises(UndecryptableError) as raised:
        rotate(trek)
    assert "trek_photos.passphrase" in raised.value.message
    assert table_dump(trek.db) == before
    report = rotate(trek, old=(trek.key, second))
    assert report.rotated == len(trek.encrypted_entries())
    with closing(sqlite3.connect(trek.db)) as conn:
        assert all(opens_under(conn, e, NEW) for e in trek.encrypted_entries())


def test_skip_undecryptable_rotates_the_rest_and_says_so(trek4: TrekCopy) -> None:
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("UPDATE users SET maps_api_key = 'enc:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' WHERE id = 2")
        conn.commit()
    report = rotate(trek4, skip_undecryptable=True)
    assert report.committed
    assert report.failed == 1
    assert any("LEFT UNTOUCHED" in w for w in report.warnings)
    assert [f.row for f in report.failures if f.catalogued] == [{"id": 2}]


def test_committed_data_only_in_wal_is_kept(trek4: TrekCopy, tmp_path: Path) -> None:
    """A TREK that is stopped uncleanly leaves committed rows in travel.db-wal."""
    writer = sqlite3.connect(trek4.db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    token = Cipher(trek4.key, Scheme.API).seal(b"wal-only-plaintext")
    writer.execute("UPDATE users SET maps_api_key = ? WHERE id = 5", (token,))
    writer.commit()
    # Keep the connection open so SQLite does not checkpoint on close; copy the files as a crash would leave them.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("travel.db", "travel.db-wal"):
        (crashed / name).write_bytes((trek4.data_dir / name).read_bytes())
    writer.close()
    assert (crashed / "travel.db-wal").stat().st_size > 0
    backup = tmp_path / "wal-backup.db"
    rotate_database(RotateOptions(crashed / "travel.db", (trek4.key,), NEW, backup))
    with closing(sqlite3.connect(crashed / "travel.db")) as conn:
        value = conn.execute("SELECT maps_api_key FROM users WHERE id = 5").fetchone()[0]
    assert Cipher(NEW, Scheme.API).open(value) == b"wal-only-plaintext"
    with closing(sqlite3.connect(backup)) as conn:
        value = conn.execute("SELECT maps_api_key FROM users WHERE id = 5").fetchone()[0]
    assert Cipher(trek4.key, Scheme.API).open(value) == b"wal-only-plaintext"
    assert backup.stat().st_mode & 0o777 == 0o600


def test_encrypt_plaintext_respects_trek_version(trek: TrekCopy) -> None:
    report = rotate(trek, encrypt_plaintext=True)
    with closing(sqlite3.connect(trek.db)) as conn:
        for entry in trek.manifest:
            value = stored_value(conn, entry)
            if entry["scheme"] == "plain":  # 3.0.15 reads unsplash_api_key as plaintext: must stay so
                assert value == entry["plaintext"]
            elif entry["scheme"] == "legacy-plain":
                assert Cipher(NEW, Scheme.API).open(value) == entry["plaintext"].encode()
    expected = sum(1 for e in trek.manifest if e["scheme"] == "legacy-plain")
    assert sum(loc.encrypted_plaintext for loc in report.locations) == expected


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])  # background search vs. inline scan
def test_tokens_outside_the_catalogue_are_found_and_rotated(trek4: TrekCopy, journal_mode: str) -> None:
    token = Cipher(trek4.key, Scheme.API).seal(b"stray secret")
    with closing(sqlite3.connect(trek4.db)) as conn:
        assert conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
        conn.execute("INSERT INTO settings (user_id, key, value) VALUES (2, 'future_api_key', ?)", (token,))
        conn.execute("UPDATE trips SET description = ? WHERE id = (SELECT min(id) FROM trips)",
                     (f"see {token} and enc:v1:this-is-only-a-note",))
        conn.commit()
    report = rotate(trek4)
    assert report.outside_catalogue == 2
    assert report.lookalikes == 1
    with closing(sqlite3.connect(trek4.db)) as conn:
        value = conn.execute("SELECT value FROM settings WHERE key = 'future_api_key'").fetchone()[0]
        description = conn.execute("SELECT description FROM trips ORDER BY id LIMIT 1").fetchone()[0]
    assert Cipher(NEW, Scheme.API).open(value) == b"stray secret"
    assert description.endswith(" and enc:v1:this-is-only-a-note")
    embedded = description.split()[1]
    assert Cipher(NEW, Scheme.API).open(embedded) == b"stray secret"


def test_rerun_after_crash_before_key_file_write_fixes_the_key_file(trek4: TrekCopy) -> None:
    """The process died after COMMIT but before .encryption_key was replaced."""
    rotate(trek4)  # no key_file: simulates the missing key-file write
    key_file = trek4.data_dir / ".encryption_key"
    assert key_file.read_text() != NEW.reveal()
    key_file.chmod(0o600)
    report = rotate(trek4, key_file=key_file, backup=trek4.data_dir / "second.db")
    assert report.rotated == 0 and not report.committed
    assert report.key_file_written == str(key_file)
    assert key_file.read_text() == NEW.reveal()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert not (trek4.data_dir / "second.db").exists()


@pytest.mark.parametrize(("workers", "batch_rows"), [(1, None), (2, None), (1, 40)])
def test_a_pool_rotates_exactly_what_one_process_rotates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         workers: int, batch_rows: int | None) -> None:
    """The writer hands batches to workers that read them themselves and feeds them before it writes what came
    back, a table's locations side by side: with one or two workers, several batches per location (dozens with
    40 rows a batch, the ten users columns' batches interleaved) and values already under the new key, the
    report and the stored texts' keys are those of a rotation without any worker."""
    import shutil

    from keyrotate.rotation import reading
    from keyrotate.trek.sample import build_sample_database

    if batch_rows is not None:
        monkeypatch.setattr(reading, "BATCH_ROWS", batch_rows)

    old = Key("the pool test's old key", "old test key")
    base = build_sample_database(tmp_path / "base.db", old, users=2500, seed=7, release="4.x").path
    with closing(sqlite3.connect(base)) as conn:
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id % 7 = 0", (Cipher(NEW, Scheme.API).seal(b"k"),))
        conn.commit()
        conn.execute("PRAGMA journal_mode=WAL")
        assert conn.execute("SELECT count(*) FROM trek_photos WHERE passphrase != ''").fetchone()[0] > 4000
    reports = []
    for run, pool in (("alone", 0), ("pooled", workers)):
        db = tmp_path / run / "travel.db"
        db.parent.mkdir()
        shutil.copy(base, db)
        report = rotate_database(RotateOptions(db, (old,), NEW, tmp_path / run / "backup.db", workers=pool))
        assert report.committed and verify_database(db, [NEW], workers=0).ok
        reports.append(report.locations)
    assert reports[0] == reports[1]
    assert any(loc.label == "users.maps_api_key" and loc.opened_by[1] > 0 and loc.rewritten > 0
               for loc in reports[1])
