"""Opening TREK's database for a pass: checked, inspected, and for reading one snapshot that is always rolled back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from keyrotate.store.database import check_integrity, check_sqlite_header, check_writable, connect, translate_error
from keyrotate.trek.catalogue import ResolvedLocation, resolve_catalogue
from keyrotate.trek.schema import DatabaseInfo, inspect_database


@dataclass(frozen=True)
class ReadSession:
    """An open database inside one read snapshot, with the catalogue resolved against its schema."""

    conn: sqlite3.Connection
    info: DatabaseInfo
    resolved: tuple[ResolvedLocation, ...]


def open_database(path: Path, busy_timeout: float, *, for_writing: bool) -> tuple[sqlite3.Connection, DatabaseInfo]:
    """A connection to a checked database (header, integrity, TREK's schema), and what its schema says."""
    check_sqlite_header(path)
    if for_writing:
        check_writable(path)
    conn = connect(path, busy_timeout=busy_timeout)
    try:
        info = inspect_database(conn, path)
        check_integrity(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn, info


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN`` ... ``ROLLBACK``: one consistent view across all tables, and nothing done inside it is kept."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            with suppress(sqlite3.Error):  # a broken connection rolls back when it closes
                conn.execute("ROLLBACK")


@contextmanager
def read_session(db_path: Path, busy_timeout: float) -> Iterator[ReadSession]:
    """Open, inspect and begin; always roll back and close; SQLite errors become keyrotate errors."""
    conn, info = open_database(db_path, busy_timeout, for_writing=False)
    try:
        with snapshot(conn):
            yield ReadSession(conn, info, tuple(resolve_catalogue(info.schema, info.version)))
    except sqlite3.Error as exc:
        raise translate_error(exc, db_path) from None
    finally:
        conn.close()
