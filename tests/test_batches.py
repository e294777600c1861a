"""The batch hot path (batches) and the worker pool (workers): same answers in a worker as in-process, and as the scanner's own code."""

from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.errors import KeyrotateError, UndecryptableError
from keyrotate.rotation.batches import BatchSpec, process_batch
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.verify import verify_database
from keyrotate.rotation.workers import CryptoPool, PendingBatch, worker_count
from keyrotate.trek.formats import Cipher, Keyring, Scheme
from keyrotate.trek.keys import Key
from keyrotate.trek.sample import build_sample_database

from .conftest import TrekCopy, listing, opens_under, table_dump

OLD = Key("old key for batch tests", "old test key")
OTHER = Key("another old key", "other test key")
NEW = Key("new key for batch tests", "new test key")
SALT = bytes(range(32))


def _rows() -> list[tuple[int, object]]:
    old, other, new = (Cipher(k, Scheme.API) for k in (OLD, OTHER, NEW))
    return [
        (1, old.seal("pässwörd 🔐".encode())),
        (2, other.seal(b"under the other key")),
        (3, new.seal(b"already new")),
        (4, "legacy plaintext"),
        (5, 42),
        (6, "enc:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),  # opens under no key
        (7, "enc:v1:" + old.seal(b"lenient base64")[7:].replace("+", "-").replace("/", "_").rstrip("=")),
    ]


def _spec(**kwargs: object) -> BatchSpec:
    defaults: dict[str, object] = {"key_order": (0, 1, 2), "fingerprint_salt": SALT}
    defaults.update(kwargs)
    return BatchSpec("users.maps_api_key", "users", "maps_api_key", Scheme.API, **defaults)  # type: ignore[arg-type]


def _submitted(pool: CryptoPool, spec: BatchSpec, rows: list[tuple[int, object]]) -> PendingBatch:
    handed = pool.try_submit(spec, rows)
    assert handed is not None  # an idle worker always takes a batch
    return handed


def test_batch_classifies_every_kind_of_value() -> None:
    result = process_batch(Keyring((OLD, OTHER, NEW)), _spec(), _rows())
    assert result.opened_by == [2, 1, 1]
    assert (result.plaintext, result.encryptable_plaintext) == (2, 1)
    assert result.unopened == [6]
    assert result.updates == [] and result.rewritten == 0


def test_batch_rewrites_to_the_new_key_and_the_result_opens() -> None:
    rows = _rows()
    result = process_batch(Keyring((OLD, OTHER, NEW)), _spec(new_index=2, encrypt_plaintext=True), rows)
    assert (result.rewritten, result.encrypted_plaintext) == (3, 1)
    new = Cipher(NEW, Scheme.API)
    expected = {1: "pässwörd 🔐".encode(), 2: b"under the other key", 4: b"legacy plaintext", 7: b"lenient base64"}
    assert {rowid: new.open(value) for value, rowid in result.updates} == expected


def test_batch_fingerprint_survives_the_rewrite_and_catches_a_changed_plaintext() -> None:
    """The post-commit pass must arrive at the write pass's digest, and only if every plaintext is the same."""
    context = Keyring((OLD, OTHER, NEW))
    rows = [row for row in _rows() if row[0] != 4]  # the plaintext row is not fingerprinted unless encrypted
    written = process_batch(context, _spec(new_index=2), rows)
    rewritten = dict((rowid, value) for value, rowid in written.updates)
    after = [(rowid, rewritten.get(rowid, value)) for rowid, value in rows]
    reread = process_batch(context, _spec(key_order=(2, 0, 1)), after)
    assert reread.opened_by[0] == written.fingerprinted == 4
    assert (reread.fingerprint, reread.fingerprinted) == (written.fingerprint, written.fingerprinted)
    tampered = [(1, Cipher(NEW, Scheme.API).seal(b"another plaintext")) if rowid == 1 else (rowid, value)
                for rowid, value in after]
    assert process_batch(context, _spec(key_order=(2, 0, 1)), tampered).fingerprint != written.fingerprint
    other_salt = process_batch(context, _spec(key_order=(2, 0, 1), fingerprint_salt=bytes(32)), after)
    assert other_salt.fingerprint != written.fingerprint


def test_a_worker_gives_the_same_result_and_reports_its_failures() -> None:
    context_keys = (OLD, OTHER, NEW)
    with CryptoPool(context_keys, 1) as pool:
        in_worker = _submitted(pool, _spec(), _rows()).get()
        assert in_worker == process_batch(Keyring(context_keys), _spec(), _rows())
        with pytest.raises(KeyrotateError, match="crypto worker failed"):
            _submitted(pool, _spec(key_order=(7,)), _rows()).get()
        assert _submitted(pool, _spec(), _rows()[:1]).get().opened_by == [1, 0, 0]  # still serving
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("extra", [(9, "legacy\x00with a NUL"), (9, "plain text"), (9, b"a blob")])
def test_rows_and_results_cross_the_pipe_unchanged(extra: tuple[int, object]) -> None:
    rows = [row for row in _rows() if isinstance(row[1], str)] + [extra]
    spec = _spec(new_index=2, encrypt_plaintext=True)
    with CryptoPool((OLD, OTHER, NEW), 1) as pool:
        in_worker = _submitted(pool, spec, rows).get()
    here = process_batch(Keyring((OLD, OTHER, NEW)), spec, rows)
    # New ciphertexts differ (fresh IVs); everything else must not.
    assert [rowid for _, rowid in in_worker.updates] == [rowid for _, rowid in here.updates]
    assert (in_worker.opened_by, in_worker.plaintext, in_worker.encrypted_plaintext, in_worker.rewritten,
            in_worker.unopened, in_worker.fingerprint) == (here.opened_by, here.plaintext, here.encrypted_plaintext,
                                                          here.rewritten, here.unopened, here.fingerprint)
    new = Cipher(NEW, Scheme.API)
    assert [new.open(v) for v, _ in in_worker.updates] == [new.open(v) for v, _ in here.updates]


def test_worker_count_decides_from_cores_and_size() -> None:
    assert worker_count(3, 0) == 3
    assert worker_count(None, 1024) == 0  # tiny database: not worth a process


@pytest.mark.parametrize("workers", [1, 2])
def test_rotation_with_workers_matches_the_manifest(trek: TrekCopy, workers: int) -> None:
    report = rotate_database(RotateOptions(trek.db, (trek.key,), NEW, trek.data_dir / "b.db", workers=workers))
    assert report.committed and report.verified_after_commit
    assert report.rotated == len(trek.encrypted_entries())
    with closing(sqlite3.connect(trek.db)) as conn:
        for entry in trek.encrypted_entries():
            assert opens_under(conn, entry, NEW), entry
    assert verify_database(trek.db, [NEW], workers=workers).ok
    assert not multiprocessing.active_children()


def test_undecryptable_with_workers_writes_nothing_and_keeps_no_backup(trek4: TrekCopy) -> None:
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("UPDATE trek_photos SET passphrase = ? WHERE rowid = (SELECT max(rowid) FROM trek_photos)",
                     (Cipher(OTHER, Scheme.API).seal(b"x"),))
        conn.commit()
    before, files = table_dump(trek4.db), listing(trek4.data_dir)
    with pytest.raises(UndecryptableError):
        rotate_database(RotateOptions(trek4.db, (trek4.key,), NEW, trek4.data_dir / "b.db", workers=1))
    assert table_dump(trek4.db) == before
    assert listing(trek4.data_dir) <= files


def test_generated_database_rotates_the_same_with_and_without_workers(tmp_path: Path) -> None:
    reports = []
    for workers in (0, 1):
        db = tmp_path / f"w{workers}.db"
        sample = build_sample_database(db, OLD, users=150, photos_per_user=20, seed=3, keep_secrets=False,
                                       plugin_user_share=0.2)
        report = rotate_database(RotateOptions(db, (OLD,), NEW, tmp_path / f"w{workers}.bak", workers=workers))
        assert report.rotated == sample.count
        reports.append([(loc.label, loc.rewritten, loc.plaintext, loc.empty) for loc in report.locations])
    assert reports[0] == reports[1]


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_backup_is_the_database_before_the_rotation_in_either_journal_mode(tmp_path: Path, journal_mode: str) -> None:
    """In WAL mode the backup is copied while the rotation writes; it must still hold the old ciphertexts."""
    db = tmp_path / "travel.db"
    build_sample_database(db, OLD, users=60, photos_per_user=20, seed=5, keep_secrets=False)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
    before = table_dump(db)
    report = rotate_database(RotateOptions(db, (OLD,), NEW, tmp_path / "backup.db", workers=1))
    assert report.committed and report.backup == str(tmp_path / "backup.db")
    assert table_dump(tmp_path / "backup.db") == before
    assert table_dump(db) != before
