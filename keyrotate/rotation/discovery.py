"""The discovery search for stray ``enc:v1:`` cells (and on a twin the unrewritable ones), on a thread of its own."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from keyrotate.rotation.targets import DiscoveryTarget, Sql
from keyrotate.rotation.unrewritable import UnrewritableCell, unrewritable_cells
from keyrotate.store.database import connect, quote_identifier
from keyrotate.store.in_thread import InThread
from keyrotate.trek.schema import DatabaseInfo


class DiscoverySearch:
    """The full-table scans for stray tokens, run in a thread on a connection of their own.

    For a read-only pass, on a twin connection in the pass's own snapshot. Otherwise only
    for a rotation of a WAL database, started once the write lock is held:
    this connection's snapshot is then the database as the rotation found it
    (no other writer can commit, and the rotation's own writes stay invisible
    until its commit). Those writes touch only catalogued cells, which the
    search excludes, so it finds exactly the rows the rotation's own scan would.
    SQLite scans without holding Python's lock, so the search overlaps the crypto.
    It hands over row ids only; the rotation reads and rewrites the rows itself.
    """

    def __init__(self, path: Path, targets: list[DiscoveryTarget], twin: Twin | None = None) -> None:
        """``twin``: a connection already inside the scanner's own snapshot (a read-only pass, see
        :func:`keyrotate.rotation.session.twin_in_snapshot`), which the search then owns and closes, and
        the tables whose unrewritable cells it lists too (the scanner's other full-table scan)."""
        self._path = path
        self._twin = twin
        self._queries = {target.table: _rowid_query(target) for target in targets}
        self._lock = threading.Lock()  # SQLite: never interrupt a connection that is closing
        self._open: sqlite3.Connection | None = None
        self._stopped = False
        self._found = InThread(self._search, "keyrotate-discovery")

    def _search(self) -> tuple[dict[str, list[int]], list[UnrewritableCell] | None]:
        twin = self._twin
        conn = twin.conn if twin is not None else connect(self._path)  # reads only
        with self._lock:
            self._open = conn
        found: dict[str, list[int]] = {}
        cells = None
        try:
            if twin is None:
                conn.execute("BEGIN")  # one snapshot for every table
            for table, sql in self._queries.items():
                if self._stopped:
                    break
                found[table] = [row[0] for row in conn.execute(sql.text, sql.params)]
            if twin is not None and not self._stopped:
                cells = list(unrewritable_cells(conn, twin.info, twin.tables))
            conn.execute("ROLLBACK")
        finally:
            with self._lock:
                self._open = None
                conn.close()
        return found, cells

    def stop(self) -> None:
        """Cut the search short if it still runs, and wait until its connection is closed.

        A pass that ends early (an error, Ctrl-C) must not leave a scan running on a connection of its own:
        the process could exit with it open, leaving ``-wal`` and ``-shm`` files beside the database.
        """
        self._stopped = True
        with self._lock:
            if self._open is not None:
                self._open.interrupt()
        with suppress(Exception):  # what it raised ("interrupted", or any error) no longer matters
            self._found.result()

    def rowids(self, table: str) -> list[int]:
        return self._found.result()[0].get(table, [])

    def unrewritable(self) -> list[UnrewritableCell] | None:
        """The cells :func:`unrewritable_cells` lists, when this search had a twin; None: list them yourself."""
        return self._found.result()[1]


@dataclass(frozen=True)
class Twin:
    """A connection inside the scanner's snapshot, and what the scanner would pass to :func:`unrewritable_cells`."""

    conn: sqlite3.Connection
    info: DatabaseInfo
    tables: Collection[str] | None


def _rowid_query(target: DiscoveryTarget) -> Sql:
    where = target.where()
    return Sql(f"SELECT rowid FROM {quote_identifier(target.table)} WHERE {where.text} ORDER BY rowid", where.params)
