"""The whole-table reads of a pass, run on a connection and thread of their own: stray tokens, unrewritable cells, empty counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyrotate.rotation.reading import empty_sums
from keyrotate.rotation.targets import DiscoveryTarget, LocationTarget, Sql, Target
from keyrotate.rotation.unrewritable import UnrewritableCell, blob_token, unrewritable_cells
from keyrotate.store.database import connect, quote_identifier
from keyrotate.store.in_thread import StoppableRead
from keyrotate.trek.catalogue import NOT_SECRETS
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

    def __init__(self, path: Path, targets: Sequence[Target], info: DatabaseInfo, twin: sqlite3.Connection | None = None,
                 discovery_tables: Collection[str] | None = None) -> None:
        """``twin``: a connection already inside the scanner's own snapshot (a read-only pass, see
        :func:`keyrotate.rotation.session.twin_in_snapshot`), which the search then owns and closes.
        ``discovery_tables``: the scanner's (None: every table)."""
        self._info = info
        self._strays = {t.table: t.where() for t in targets if isinstance(t, DiscoveryTarget)}
        self._located = [t for t in targets if isinstance(t, LocationTarget)]
        self._tables = discovery_tables
        self._own_snapshot = twin is None
        self._found = StoppableRead((lambda: twin) if twin is not None else (lambda: connect(path)),  # reads only
                                    self._search, "keyrotate-discovery")
        self._found.start()

    def _search(self, conn: sqlite3.Connection) -> _Found:
        found: dict[str, list[int]] = {}
        cells: list[UnrewritableCell] = []
        empties: dict[str, int] = {}
        if self._own_snapshot:
            conn.execute("BEGIN")  # one snapshot for every table
        for scan in _table_scans(self._strays, self._info, self._tables, self._located):
            if self._found.stopped:
                return _Found(found)
            row = conn.execute(scan.sql.text, scan.sql.params).fetchone()
            if scan.stray:
                found[scan.table] = sorted(map(int, row[0].split(","))) if row[0] else []  # no order promised
            if scan.blobs and row[scan.stray]:  # list the cells there
                cells.extend(unrewritable_cells(conn, self._info, (scan.table,)))
            empties.update(zip(scan.empties, (int(n or 0) for n in row[len(row) - len(scan.empties):]), strict=True))
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
        """The cells :func:`unrewritable_cells` lists; None when the search was stopped first."""
        return self._found.result().unrewritable

    def empties(self) -> dict[str, int] | None:
        """NULL and '' per whole-value location label (:func:`count_empty_values`), as :meth:`unrewritable`."""
        return self._found.result().empties


@dataclass(frozen=True)
class _TableScan:
    """One read of a table: a single aggregate row of the stray tokens' row ids, comma-separated (when
    ``stray``), then whether :func:`unrewritable_cells` has cells to list there (when ``blobs``: a BLOB holds
    ``enc:v1:``, or it is a table without usable row ids, with rows), then one count per ``empties`` label."""

    table: str
    sql: Sql
    stray: bool
    blobs: bool
    empties: tuple[str, ...]


def _table_scans(strays: dict[str, Sql], info: DatabaseInfo, tables: Collection[str] | None,
                 located: Sequence[LocationTarget]) -> Iterator[_TableScan]:
    """The stray tokens (``strays``: each discovery table's condition), what :func:`unrewritable_cells` looks
    for in rowid tables and what :func:`count_empty_values` counts, read in one pass over each table instead
    of three (each is a full-table scan)."""
    columns = info.schema | info.index_content
    for table in columns:
        parts: list[Sql] = []
        stray = strays.get(table)  # never a table without usable row ids
        if stray is not None:
            parts.append(Sql(f"group_concat(CASE WHEN {stray.text} THEN rowid END)", stray.params))
        scanned = [] if tables is not None and table not in tables \
            else [c for c in columns[table] if (table, c) not in NOT_SECRETS]
        if scanned and (table in info.unaddressable or table in info.index_content):
            # any cell may be one: it looks itself
            parts.append(Sql("max(1)"))
        elif scanned:
            parts.append(Sql(f"max(CASE WHEN {' OR '.join(blob_token(c) for c in scanned)} THEN 1 END)"))
        labels = [t.location for t in located if t.table == table and not t.json]
        parts += empty_sums(labels)
        if parts:
            sql = Sql(f"SELECT {', '.join(p.text for p in parts)} FROM {quote_identifier(table)}",
                      tuple(value for p in parts for value in p.params))
            yield _TableScan(table, sql, stray is not None, bool(scanned), tuple(loc.label for loc in labels))
