"""The batch hot path (batches), the stored-text digest (stored) and the worker pool (workers): same answers in a worker as in-process, and as the scanner's own code."""

from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.errors import KeyrotateError, UndecryptableError
from keyrotate.rotation import reading
from keyrotate.rotation.batches import BatchSpec, RowRange, close_readers, process_batch, read_range
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.stored import StoredDigest, differing_labels
from keyrotate.rotation.verify import verify_database
from keyrotate.rotation.workers import CryptoPool, PendingBatch, worker_count
from keyrotate.trek.formats import Cipher, Keyring, Scheme
from keyrotate.trek.keys import Key
from keyrotate.trek.sample import build_sample_database

from .conftest import TrekCopy, listing, opens_under, table_dump
from .crashkit import inspect, make_scenario

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
    defaults: dict[str, object] = {"key_order": (0, 1, 2)}
    defaults.update(kwargs)
    return BatchSpec("users.maps_api_key", "users", "maps_api_key", Scheme.API, **defaults)  # type: ignore[arg-type]


def _submitted(pool: CryptoPool, spec: BatchSpec, rows: list[tuple[int, object]] | RowRange) -> PendingBatch:
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


def test_stored_digest_matches_the_texts_written_and_nothing_else() -> None:
    """The post-commit check digests the stored texts read back: equal only if they are the bytes written."""
    rows = _rows()
    written = process_batch(Keyring((OLD, OTHER, NEW)), _spec(new_index=2), rows)
    pass_digest = StoredDigest(SALT)
    pass_digest.add_values("users.maps_api_key", rows, written.updates)
    rewritten = dict((rowid, value) for value, rowid in written.updates)
    on_disk = [(rowid, rewritten.get(rowid, value)) for rowid, value in rows]

    def read_back(stored: list[tuple[int, object]], key: bytes = SALT) -> StoredDigest:
        digest = StoredDigest(key)
        digest.add_values("users.maps_api_key", stored, ())
        return digest

    labels = {"users.maps_api_key"}
    assert differing_labels(pass_digest, read_back(on_disk), labels) == []
    assert pass_digest.count(labels) == len(rows)
    new = Cipher(NEW, Scheme.API)
    # The same plaintext under the new key with another IV: it opens fine, but it is not the checked text.
    again = [(rowid, new.seal(new.open(value)) if rowid == 1 else value) for rowid, value in on_disk]  # type: ignore[arg-type]
    changed = [(rowid, "5" if rowid == 5 else value) for rowid, value in on_disk]  # the number 42 as text
    swapped = [(rowid, on_disk[0][1] if rowid == 3 else on_disk[2][1] if rowid == 1 else value)
               for rowid, value in on_disk]
    for tampered in (again, changed, swapped, on_disk[1:]):
        assert differing_labels(pass_digest, read_back(tampered), labels) == ["users.maps_api_key"]
    assert differing_labels(pass_digest, read_back(on_disk, bytes(32)), labels) == ["users.maps_api_key"]


def test_stored_digest_of_fully_rewritten_batches_and_of_discovered_cells() -> None:
    rows = [row for row in _rows() if row[0] in (1, 2, 7)]  # all under an old key: every one rewritten
    written = process_batch(Keyring((OLD, OTHER, NEW)), _spec(new_index=2), rows)
    assert [rowid for _, rowid in written.updates] == [1, 2, 7]
    pass_digest, reread = StoredDigest(SALT), StoredDigest(SALT)
    pass_digest.add_values("users.maps_api_key", rows, written.updates)
    reread.add_values("users.maps_api_key", [(rowid, text) for text, rowid in written.updates], ())
    assert differing_labels(pass_digest, reread, {"users.maps_api_key"}) == []
    # Discovery: (rowid, *cells), NULL where a cell holds no token; updates name their column.
    cells = [(3, "note enc:v1:old", None), (8, None, "enc:v1:other")]
    pass_digest.add_cells("notes (outside the catalogue)", ("body", "title"), cells, [("note enc:v1:new", 3, "body")])
    reread.add_cells("notes (outside the catalogue)", ("body", "title"),
                     [(3, "note enc:v1:new", None), (8, None, "enc:v1:other")], ())
    assert differing_labels(pass_digest, reread, {"notes (outside the catalogue)"}) == []
    moved = StoredDigest(SALT)
    moved.add_cells("notes (outside the catalogue)", ("body", "title"),
                    [(3, "note enc:v1:new", None), (8, "enc:v1:other", None)], ())
    assert differing_labels(pass_digest, moved, {"notes (outside the catalogue)"}) == ["notes (outside the catalogue)"]


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
            in_worker.unopened) == (here.opened_by, here.plaintext, here.encrypted_plaintext, here.rewritten,
                                    here.unopened)
    new = Cipher(NEW, Scheme.API)
    assert [new.open(v) for v, _ in in_worker.updates] == [new.open(v) for v, _ in here.updates]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_check_after_the_commit_passes_when_batches_finish_out_of_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Tiny batches: while the workers are busy the scanner does batches itself, so results come back in another
    order than the rows were read. The stored-text digest must not depend on that order."""
    monkeypatch.setattr(reading, "BATCH_ROWS", 3)
    scenario = make_scenario(tmp_path)
    report = rotate_database(RotateOptions(scenario.db, (scenario.old_key,), scenario.new_key, tmp_path / "b.db",
                                           workers=workers))
    assert report.committed and report.verified_after_commit
    assert inspect(scenario).under == "new"


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


def test_a_worker_reads_its_range_as_the_database_was_before_the_uncommitted_writes(tmp_path: Path) -> None:
    """RowRange: under the rotation's write lock in WAL, another connection reads the pre-rotation values."""
    db = tmp_path / "travel.db"
    build_sample_database(db, OLD, users=20, photos_per_user=5, seed=2, keep_secrets=False)
    sql = ("SELECT rowid, passphrase FROM trek_photos WHERE rowid BETWEEN ? AND ? "
           "AND passphrase IS NOT NULL AND passphrase != '' ORDER BY rowid")
    with closing(sqlite3.connect(db, isolation_level=None)) as writer:
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        before = writer.execute(sql, (1, 40)).fetchall()
        assert len(before) > 10
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE trek_photos SET passphrase = 'rewritten' WHERE rowid <= 40")
        assert read_range(RowRange(str(db), sql, (1, 40), len(before))) == before
        with pytest.raises(KeyrotateError, match="other rows"):
            read_range(RowRange(str(db), sql, (1, 40), len(before) + 1))
        spec = _spec(new_index=2)
        with CryptoPool((OLD, OTHER, NEW), 1) as pool:
            in_worker = _submitted(pool, spec, RowRange(str(db), sql, (1, 40), len(before))).get()
            pool.release_reads()
        here = process_batch(Keyring((OLD, OTHER, NEW)), spec, before)
        assert [rowid for _, rowid in in_worker.updates] == [rowid for _, rowid in here.updates] == [r[0] for r in before]
        writer.execute("ROLLBACK")
    close_readers()
