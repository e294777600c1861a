"""The discovery search: row ids of stray ``enc:v1:`` cells, found on a connection and thread of its own."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from keyrotate.rotation.targets import DiscoveryTarget, Sql
from keyrotate.store.database import connect, quote_identifier
from keyrotate.store.in_thread import InThread


class DiscoverySearch:
    """The full-table scans for stray tokens, run in a thread on a connection of their own.

    Only for a rotation of a WAL database, started once the write lock is held:
    this connection's snapshot is then the database as the rotation found it
    (no other writer can commit, and the rotation's own writes stay invisible
    until its commit). Those writes touch only catalogued cells, which the
    search excludes, so it finds exactly the rows the rotation's own scan would.
    SQLite scans without holding Python's lock, so the search overlaps the crypto.
    It hands over row ids only; the rotation reads and rewrites the rows itself.
    """

    def __init__(self, path: Path, targets: list[DiscoveryTarget]) -> None:
        self._path = path
        self._queries = {target.table: _rowid_query(target) for target in targets}
        self._found = InThread(self._search, "keyrotate-discovery")

    def _search(self) -> dict[str, list[int]]:
        with closing(connect(self._path)) as conn:  # reads only
            conn.execute("BEGIN")  # one snapshot for every table
            found = {table: [row[0] for row in conn.execute(sql.text, sql.params)]
                     for table, sql in self._queries.items()}
            conn.execute("ROLLBACK")
        return found

    def rowids(self, table: str) -> list[int]:
        return self._found.result().get(table, [])


def _rowid_query(target: DiscoveryTarget) -> Sql:
    where = target.where()
    return Sql(f"SELECT rowid FROM {quote_identifier(target.table)} WHERE {where.text} ORDER BY rowid", where.params)
