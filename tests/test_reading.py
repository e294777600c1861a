"""Reading and writing batches (reading): the one-UPDATE writer changes exactly a batch's rows, or refuses."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.errors import KeyrotateError
from keyrotate.rotation.reading import BatchReads, RangeWriter
from keyrotate.rotation.targets import LocationTarget
from keyrotate.trek.catalogue import SecretLocation
from keyrotate.trek.formats import Scheme

SETTING = LocationTarget(SecretLocation("settings", "value", Scheme.API, "a key", "revoke it", setting_key="token"))


def _settings(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute('CREATE TABLE settings (id INTEGER PRIMARY KEY, "key" TEXT, value TEXT)')
    conn.executemany('INSERT INTO settings ("key", value) VALUES (?, ?)',
                     [("token" if i % 3 else "theme", f"v{i}") for i in range(30)])
    return conn


def test_the_range_writer_changes_exactly_the_rows_of_a_batch(tmp_path: Path) -> None:
    with closing(_settings(tmp_path / "db")) as conn:
        batch = BatchReads(SETTING).rows(conn, 3)  # rows after rowid 3 whose key is "token", others between them
        assert len(batch) == 18
        before = conn.execute("SELECT id, \"key\", value FROM settings ORDER BY id").fetchall()
        RangeWriter(conn).write(SETTING, [(f"new {rowid}", rowid) for rowid, _ in batch])
        after = conn.execute("SELECT id, \"key\", value FROM settings ORDER BY id").fetchall()
        written = {rowid for rowid, _ in batch}
        assert [row for row in after if row[0] in written] == [(i, "token", f"new {i}") for i, _, _ in before
                                                                if i in written]
        assert [row for row in after if row[0] not in written] == [row for row in before if row[0] not in written]


def test_the_range_writer_refuses_pairs_that_are_not_a_whole_batch(tmp_path: Path) -> None:
    with closing(_settings(tmp_path / "db")) as conn:
        batch = BatchReads(SETTING).rows(conn, 0)
        conn.execute("BEGIN")
        with pytest.raises(KeyrotateError, match="changed 20 rows, not 19"):
            RangeWriter(conn).write(SETTING, [(f"new {rowid}", rowid) for rowid, _ in batch if rowid != batch[5][0]])
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM settings WHERE value LIKE 'new %'").fetchone()[0] == 0
