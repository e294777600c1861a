"""The whole-table reads of a pass, run on a connection and thread of their own: stray tokens, unrewritable cells, empty counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyrotate.rotation.reading import count_empty_values
from keyrotate.rotation.targets import DiscoveryTarget, LocationTarget, Sql, Target
from keyrotate.rotation.unrewritable import UnrewritableCell, unrewritable_cells
from keyrotate.store.database import connect, quote_identifier
from keyrotate.store.in_thread import StoppableRead
from keyrotate.trek.schema import DatabaseInfo


@dataclass(frozen=True)
class _Found:
    """What the search found, in the snapshot it shares with the scanner (None: it was stopped first)."""

    rowids: dict[str, list[int]]
    unrewritable: list[UnrewritableCell] | None = None
    empties: dict[str, int] | None = None


class DiscoverySearch:
    """The full-table scans, run in a thread on a connection of their own.

    The row ids of stray tokens (the discovery targets), the cells discovery
    cannot rewrite (:func:`unrewritable_cells`) and the NULL and '' counts of the
    whole-value locations (:func:`count_empty_values`): every table is read
    whole, and none of it needs the scanner's connection.

    For a read-only pass, on a twin connection in the pass's own snapshot. Otherwise only
    for a rotation of a WAL database, started once the write lock is held:
    this connection's snapshot is then the database as the rotation found it
    (no other writer can commit, and the rotation's own writes stay invisible
    until its commit). Those writes touch only non-empty catalogued cells, which the
    token search excludes, and stray tokens in TEXT cells of rowid tables, which are
    neither unrewritable nor empty, so it finds exactly what the rotation's own scans would.
    SQLite scans without holding Python's lock, so the search overlaps the crypto.
    It hands over row ids only; the rotation reads and rewrites the rows itself.
    """

    def __init__(self, path: Path, targets: Sequence[Target], twin: sqlite3.Connection | None = None,
                 info: DatabaseInfo | None = None, discovery_tables: Collection[str] | None = None) -> None:
        """``twin``: a connection already inside the scanner's own snapshot (a read-only pass, see
        :func:`keyrotate.rotation.session.twin_in_snapshot`), which the search then owns and closes.
        ``info`` (and the scanner's ``discovery_tables``): list the unrewritable cells and count the
        empty values too; without it only the stray tokens are searched."""
        self._info = info
        self._queries = {t.table: _rowid_query(t) for t in targets if isinstance(t, DiscoveryTarget)}
        self._located = [t for t in targets if isinstance(t, LocationTarget)]
        self._tables = discovery_tables
        self._own_snapshot = twin is None
        self._found = StoppableRead((lambda: twin) if twin is not None else (lambda: connect(path)),  # reads only
                                    self._search, "keyrotate-discovery")
        self._found.start()

    def _search(self, conn: sqlite3.Connection) -> _Found:
        found: dict[str, list[int]] = {}
        if self._own_snapshot:
            conn.execute("BEGIN")  # one snapshot for every table
        for table, sql in self._queries.items():
            if self._found.stopped:
                return _Found(found)
            found[table] = [row[0] for row in conn.execute(sql.text, sql.params)]
        if self._found.stopped or self._info is None:
            return _Found(found)
        cells = list(unrewritable_cells(conn, self._info, self._tables))
        empties = count_empty_values(conn, self._located) if not self._found.stopped else None
        conn.execute("ROLLBACK")
        return _Found(found, cells, empties)

    def stop(self) -> None:
        """Cut the search short if it still runs, and wait until its connection is closed.

        A pass that ends early (an error, Ctrl-C) must not leave a scan running on a connection of its own:
        the process could exit with it open, leaving ``-wal`` and ``-shm`` files beside the database.
        """
        self._found.stop()

    def rowids(self, table: str) -> list[int]:
        return self._found.result().rowids.get(table, [])

    def unrewritable(self) -> list[UnrewritableCell] | None:
        """The cells :func:`unrewritable_cells` lists; None when not listed (no ``info``, or stopped)."""
        return self._found.result().unrewritable

    def empties(self) -> dict[str, int] | None:
        """NULL and '' per whole-value location label (:func:`count_empty_values`), as :meth:`unrewritable`."""
        return self._found.result().empties


def _rowid_query(target: DiscoveryTarget) -> Sql:
    where = target.where()
    return Sql(f"SELECT rowid FROM {quote_identifier(target.table)} WHERE {where.text} ORDER BY rowid", where.params)
