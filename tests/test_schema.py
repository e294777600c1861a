"""trek/schema.py: which tables keyrotate reads, from PRAGMA table_list, on copies of the real fixtures."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from keyrotate.rotation.engine import RotateOptions, rotate_database
from keyrotate.store.database import connect
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key
from keyrotate.trek.schema import inspect_database

from .conftest import TrekCopy

NEW = Key("a-new-key-for-the-schema-tests-0123456789", "new test key")


def add_tables(trek: TrekCopy) -> str:
    """An FTS5 index (virtual, with shadow tables), a WITHOUT ROWID table, and an ordinary table whose SQL
    merely contains the words WITHOUT ROWID. Each holds a token under the fixture's key; the last one's is returned."""
    token = Cipher(trek.key, Scheme.API).seal(b"a webhook secret")
    with closing(sqlite3.connect(trek.db)) as conn:
        conn.execute("CREATE VIRTUAL TABLE note_search USING fts5(body)")
        conn.execute("INSERT INTO note_search (body) VALUES (?)", (Cipher(trek.key, Scheme.API).seal(b"indexed"),))
        conn.execute("CREATE TABLE sync_state (name TEXT PRIMARY KEY, state TEXT) WITHOUT ROWID")
        conn.execute("CREATE TABLE hooks (id INTEGER PRIMARY KEY, secret TEXT, mode TEXT DEFAULT 'WITHOUT ROWID')")
        conn.execute("INSERT INTO hooks (secret) VALUES (?)", (token,))
        conn.commit()
    return token


def test_virtual_and_shadow_tables_are_left_out_and_without_rowid_comes_from_sqlite(trek4: TrekCopy) -> None:
    add_tables(trek4)
    with closing(connect(trek4.db)) as conn:
        info = inspect_database(conn, trek4.db)
    assert not [t for t in info.schema if t.startswith("note_search") or t.startswith("sqlite_")]
    assert info.without_rowid == {"sync_state"}
    assert info.schema["hooks"] == ("id", "secret", "mode")
    assert list(info.schema)[-2:] == ["sync_state", "hooks"]  # in the order the tables were created


def test_a_table_whose_sql_mentions_without_rowid_is_rotated(trek4: TrekCopy, tmp_path: Path) -> None:
    token = add_tables(trek4)
    report = rotate_database(RotateOptions(trek4.db, (trek4.key,), NEW, backup_path=None, workers=0))
    assert report.committed and report.verified_after_commit
    with closing(sqlite3.connect(trek4.db)) as conn:
        [stored] = conn.execute("SELECT secret FROM hooks").fetchone()
    assert stored != token
    assert Cipher(NEW, Scheme.API).open(stored) == b"a webhook secret"
