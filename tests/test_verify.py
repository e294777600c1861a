"""rotation/verify.py and its read session: with a pool, the stray-token scans run on a twin connection in the
same snapshot and the report is the one a single connection gives, on real SQLite files and real keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.errors import NotADatabaseError, NotTrekError
from keyrotate.operations.exposure import find_exposure
from keyrotate.rotation import discovery, session
from keyrotate.rotation.discovery import DiscoverySearch
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.reading import count_empty_values
from keyrotate.rotation.session import read_session
from keyrotate.rotation.targets import DiscoveryTarget, LocationTarget, Sql, plan_targets
from keyrotate.rotation.unrewritable import unrewritable_cells
from keyrotate.rotation.verify import verify_database
from keyrotate.store.database import connect
from keyrotate.trek.catalogue import detect_trek_version
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key, create_key_file
from keyrotate.trek.sample import build_sample_database
from keyrotate.trek.schema import DatabaseInfo

KEY = Key("the key of the verify tests, which opens everything", "verify test key")
LOST = Key("a key nobody has any more", "lost test key")


def sample(tmp_path: Path, journal: str = "wal") -> Path:
    """A generated TREK database with a stray token under a lost key, a BLOB token and a WITHOUT ROWID token."""
    db = build_sample_database(tmp_path / "travel.db", KEY, users=40, seed=5, release="4.x").path
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE trips SET description = ? WHERE id = 3", (Cipher(LOST, Scheme.API).seal(b"lost"),))
        conn.execute("UPDATE trips SET description = ? WHERE id = 4", (Cipher(LOST, Scheme.API).seal(b"b").encode(),))
        conn.execute("CREATE TABLE sync_state (name TEXT PRIMARY KEY, state TEXT) WITHOUT ROWID")
        conn.execute("INSERT INTO sync_state VALUES ('calendar', ?)", (Cipher(LOST, Scheme.API).seal(b"s"),))
        conn.commit()
        conn.execute(f"PRAGMA journal_mode={journal}")
    return db


@pytest.fixture
def twin_searches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """The unrewritable-cell lists the background searches handed over (None: the scanner listed them itself)."""
    seen: list[object] = []
    original = discovery.DiscoverySearch.unrewritable

    def spy(self: discovery.DiscoverySearch) -> object:
        cells = original(self)
        seen.append(cells)
        return cells

    monkeypatch.setattr(discovery.DiscoverySearch, "unrewritable", spy)
    yield seen


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_verify_with_a_pool_reports_what_one_connection_reports(
        tmp_path: Path, journal: str, twin_searches: list[object]) -> None:
    db = sample(tmp_path, journal)
    alone = verify_database(db, [KEY], workers=0)
    assert twin_searches == []
    pooled = verify_database(db, [KEY], workers=1)
    assert len(twin_searches) == 1 and isinstance(twin_searches[0], list)  # the twin did the scans
    assert pooled == alone
    assert not alone.ok
    assert {f.table for f in alone.failures} == {"trips", "sync_state"}


def test_the_twin_reads_the_snapshot_of_the_session_whatever_is_committed_after(tmp_path: Path) -> None:
    db = sample(tmp_path)
    with read_session(db, 1.0, twin=True) as opened:
        twin = opened.take_twin()
        assert twin is not None
        with closing(sqlite3.connect(db)) as writer:
            writer.execute("UPDATE trips SET title = 'changed' WHERE id = 1")
            writer.commit()
        with closing(twin):
            seen = [c.execute("SELECT title FROM trips WHERE id = 1").fetchone()[0] for c in (opened.conn, twin)]
    assert seen[0] == seen[1] != "changed"


def test_no_twin_when_a_commit_comes_between(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer commits after the twin first looked and before the session's snapshot begins: the twin would
    read another database than the session, so there is none and the session reads alone (what it sees)."""
    db = sample(tmp_path)
    original = session._open_twin

    def then_a_commit(path: Path) -> tuple[sqlite3.Connection, int] | None:
        opened = original(path)
        with closing(sqlite3.connect(db)) as writer:
            writer.execute("UPDATE trips SET title = 'changed' WHERE id = 1")
            writer.commit()
        return opened

    monkeypatch.setattr(session, "_open_twin", then_a_commit)
    with read_session(db, 1.0, twin=True) as opened:
        assert opened.twin is None
        assert opened.conn.execute("SELECT title FROM trips WHERE id = 1").fetchone()[0] == "changed"
    report = verify_database(db, [KEY], workers=1)
    assert {f.table for f in report.failures} == {"trips", "sync_state"}


def test_an_untaken_twin_is_closed_with_the_session(tmp_path: Path) -> None:
    db = sample(tmp_path)
    with read_session(db, 1.0, twin=True) as opened:
        twin = opened.twin
        assert twin is not None
    with pytest.raises(sqlite3.ProgrammingError):
        twin.execute("SELECT 1")
    assert not Path(f"{db}-wal").exists()  # the last connection to close tidied up


def test_the_search_reads_each_table_once_and_finds_what_the_scanner_would(tmp_path: Path) -> None:
    """The background search folds three full-table scans into one per table: stray tokens, unrewritable cells
    (a BLOB token, a WITHOUT ROWID table before a rowid table in the schema) and the empty counts must be exactly
    what the scanner's own queries give on the same snapshot, in the same order."""
    db = build_sample_database(tmp_path / "travel.db", KEY, users=40, seed=5, release="4.x").path
    token = Cipher(LOST, Scheme.API).seal(b"x")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE a_sync (name TEXT PRIMARY KEY, state TEXT) WITHOUT ROWID")
        conn.execute("INSERT INTO a_sync VALUES ('calendar', ?)", (token,))
        conn.execute("CREATE TABLE z_notes (id INTEGER PRIMARY KEY, body TEXT, raw BLOB, n INTEGER)")
        conn.executemany("INSERT INTO z_notes VALUES (?, ?, ?, ?)", [
            (1, f"see {token}", None, 1), (2, "plain", token.encode(), 2), (3, None, b"no token", token),
            (5, token, f"x{token}".encode(), None)])
        conn.execute("UPDATE trips SET description = ? WHERE id IN (3, 7)", (token,))
        conn.execute("UPDATE users SET mfa_secret = '' WHERE id < 5")
        conn.execute("UPDATE settings SET value = NULL WHERE rowid % 3 = 0")
        conn.commit()
    with read_session(db, 1.0) as opened:
        targets = plan_targets(opened.info, opened.resolved)
        search = DiscoverySearch(db, targets, info=opened.info)
        strays = {t.table: [r[0] for r in opened.conn.execute(
            f"SELECT rowid FROM {t.table} WHERE {t.where().text} ORDER BY rowid", t.where().params)]
            for t in targets if isinstance(t, DiscoveryTarget)}
        assert strays["z_notes"] == [1, 3, 5] and {3, 7} <= set(strays["trips"])
        assert {table: search.rowids(table) for table in strays} == strays
        cells = list(unrewritable_cells(opened.conn, opened.info))
        assert [(c.table, c.rowid, c.column) for c in cells if "enc:v1:" in c.text] == [
            ("a_sync", 0, "state"), ("z_notes", 2, "raw"), ("z_notes", 5, "raw")]  # row 5's TEXT token is a stray
        assert search.unrewritable() == cells
        empties = count_empty_values(opened.conn, [t for t in targets if isinstance(t, LocationTarget)])
        assert sum(n > 0 for n in empties.values()) >= 3  # keyed (settings) and whole-column (users) counts
        found = search.empties()
        assert found is not None and {label: n for label, n in found.items() if n} == {  # 0 or left out: none
            label: n for label, n in empties.items() if n}


def damaged_index(db: Path) -> Path:
    """``db`` made to read fine but fail SQLite's integrity check: an index whose definition names another
    column than the one its entries hold. No scan meets the damage; only the check finds it."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE z_notes (a TEXT, b TEXT)")
        conn.execute("CREATE INDEX z_notes_a ON z_notes (a)")
        conn.executemany("INSERT INTO z_notes VALUES (?, ?)", [(f"a{i}", f"b{i}") for i in range(50)])
        conn.commit()
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX z_notes_a ON z_notes (b)' WHERE name = 'z_notes_a'")
        conn.commit()
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check(1)").fetchone()[0] != "ok"
    return db


@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_database_is_refused_with_the_integrity_verdict(tmp_path: Path, workers: int) -> None:
    """The integrity check begun at open runs beside the read (verify) or the pass (a WAL rotation), so its
    verdict must still be waited for: verify fails, the rotation commits nothing and keeps no backup, and
    nothing is left open beside the database."""
    db = damaged_index(sample(tmp_path))
    with pytest.raises(NotADatabaseError, match="integrity check"):
        verify_database(db, [KEY], workers=workers)
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    before = db.read_bytes()
    backup = tmp_path / "backup.db"
    for backup_path in (backup, None):  # with a backup, its check of the copy gives the verdict
        with pytest.raises(NotADatabaseError, match="integrity check"):
            rotate_database(RotateOptions(db, (KEY,), LOST, backup_path, workers=workers))
        assert db.read_bytes() == before and not backup.exists()
        assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    # Nothing under the old key (a rerun after a commit): no backup is taken, and the key file is not touched.
    db = damaged_index(build_sample_database(tmp_path / "rerun.db", KEY, users=40, seed=5, release="4.x").path)
    before = db.read_bytes()
    key_file = tmp_path / ".encryption_key"
    create_key_file(key_file, LOST.reveal())
    with pytest.raises(NotADatabaseError, match="integrity check"):
        rotate_database(RotateOptions(db, (LOST,), KEY, backup, workers=workers, key_file=key_file))
    assert key_file.read_text().strip() == LOST.reveal() and db.read_bytes() == before and not backup.exists()


def test_an_exposure_that_shows_secrets_as_it_finds_them_has_the_verdict_first(tmp_path: Path) -> None:
    """Streamed output cannot be taken back: on a damaged database the exposure stops before the first secret."""
    db = damaged_index(sample(tmp_path))
    shown: list[object] = []
    with pytest.raises(NotADatabaseError, match="integrity check"):
        find_exposure(db, [KEY], on_secret=shown.append, keep_secrets=False, check_copies=False, workers=0)
    assert shown == []
    (tmp_path / "intact").mkdir()
    report = find_exposure(sample(tmp_path / "intact"), [KEY], on_secret=shown.append, keep_secrets=False,
                           check_copies=False, workers=0)
    assert shown and report is not None


def notes_database(db: Path, rows: int, text: str) -> Path:
    """A WAL database that is not TREK's: one table of ``rows`` notes (``text`` with ``%d`` for the row),
    big enough that a full scan or integrity check is still running when it is stopped."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                     "INSERT INTO notes (body) SELECT printf(?, i) FROM n", (rows, text))
        conn.commit()
    return db


def test_a_search_cut_short_closes_its_connection_before_stop_returns(tmp_path: Path) -> None:
    """A pass that fails or is interrupted stops its background search: no connection is left open behind it,
    so the last one to close tidies the ``-wal`` and ``-shm`` files away (a verify leaves no residue)."""
    db = notes_database(tmp_path / "big.db", 300_000, "note %d without any token at all")
    target = DiscoveryTarget("notes", ("body",), (Sql("0"),))
    schema = {"notes": ("id", "body")}
    info = DatabaseInfo(db, schema, frozenset(), None, detect_trek_version(schema, None))
    with closing(connect(db)) as conn:
        conn.execute("SELECT count(*) FROM notes").fetchone()
        for _ in range(3):
            search = DiscoverySearch(db, [target], info)
            search.stop()
            assert search._found._open is None  # closed, not merely asked to stop (see StoppableRead)
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()


def test_the_integrity_check_beside_the_schema_reading_leaves_nothing_open(tmp_path: Path) -> None:
    """open_database checks integrity on a connection of its own while it reads the schema; when the schema says
    "not TREK" first, that error wins, as before, and the check's connection is closed before it is raised."""
    db = notes_database(tmp_path / "other.db", 200_000, "note %d")
    for _ in range(3):
        with pytest.raises(NotTrekError):
            session.open_database(db, 1.0, for_writing=False)
        assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()


def test_a_token_outside_the_catalogue_under_no_key_is_not_counted_as_catalogued(tmp_path: Path) -> None:
    """It fails verify (and blocks a rotation) like a catalogued secret, but the catalogued total used to
    include it only while no key opened it: "195 of 218" with one key, "of 217" once a key opened it, and
    ``"catalogued": true`` on a row labelled "outside the catalogue"."""
    db = build_sample_database(tmp_path / "travel.db", KEY, users=6, seed=5, release="4.x").path
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE trips SET description = ? WHERE id = (SELECT min(id) FROM trips)",
                     ("see " + Cipher(LOST, Scheme.API).seal(b"a key pasted into a note"),))
        conn.commit()
    alone, with_lost = verify_database(db, [KEY], workers=0), verify_database(db, [KEY, LOST], workers=0)
    assert alone.catalogued_tokens == with_lost.catalogued_tokens == alone.opened_by_first
    assert not alone.ok and alone.outside_unopened == 1
    assert with_lost.ok and with_lost.outside_unopened == 0
    body = alone.to_json()
    stray = [loc for loc in body["locations"] if loc["label"].startswith("trips.description (outside the catalogue")]
    assert [(loc["catalogued"], loc["blocking"], loc["unopened"]) for loc in stray] == [(False, True, 1)]
    assert [(f["catalogued"], f["blocking"]) for f in body["failures"]] == [(False, True)]
    assert body["totals"]["open_under_no_key"] == 0 and body["totals"]["outside_catalogue_open_under_no_key"] == 1
