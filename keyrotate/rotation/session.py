"""Opening TREK's database for a pass: checked, inspected, and for reading one snapshot that is always rolled back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from keyrotate.errors import KeyrotateError, NotADatabaseError
from keyrotate.store.database import (
    check_sqlite_header,
    check_writable,
    connect,
    data_version,
    translate_error,
)
from keyrotate.store.integrity import IntegrityCheck
from keyrotate.trek.catalogue import ResolvedLocation, resolve_catalogue
from keyrotate.trek.schema import DatabaseInfo, inspect_database


@dataclass
class ReadSession:
    """An open database inside one read snapshot, with the catalogue resolved against its schema.

    ``twin``: when asked for and SQLite could give one, a second connection inside the very same snapshot
    (see :func:`twin_in_snapshot`). Whoever takes it (:meth:`take_twin`) rolls it back and closes it.
    """

    conn: sqlite3.Connection
    info: DatabaseInfo
    resolved: tuple[ResolvedLocation, ...]
    twin: sqlite3.Connection | None = None

    def take_twin(self) -> sqlite3.Connection | None:
        twin, self.twin = self.twin, None
        return twin


def open_database(path: Path, busy_timeout: float, *, for_writing: bool, reading_only: bool = False,
                  backup_checks: bool = False) -> tuple[sqlite3.Connection, DatabaseInfo, IntegrityCheck]:
    """A connection to a database whose header and schema are checked (TREK's), what its schema says, and
    SQLite's integrity check of it, still running on a connection and thread of its own.

    The caller overlaps the check with its own first reads, inside :func:`damage_first`, and has its
    verdict (:meth:`IntegrityCheck.wait`) before it trusts what it read or commits anything. With
    ``backup_checks`` (a rotation that backs the database up first) the check waits to be needed: the
    backup's own check of its page-for-page copy usually gives the verdict (:meth:`IntegrityCheck.covered`).
    ``reading_only``: the caller never takes the write lock (a rotation does, even a dry run), so a ``-wal``
    holding changes is read through a read-only connection and left as it is (see :func:`connect`).
    """
    check_sqlite_header(path)
    if for_writing:
        check_writable(path)
    conn = connect(path, busy_timeout=busy_timeout, for_writing=not reading_only)  # a dry run locks too
    integrity = IntegrityCheck(path, busy_timeout, at_once=not backup_checks)
    try:
        info = inspect_database(conn, path)  # its error ("not TREK") wins: the check is stopped, not awaited
    except BaseException:
        integrity.stop()
        conn.close()
        raise
    return conn, info, integrity


@contextmanager
def damage_first(integrity: IntegrityCheck) -> Iterator[None]:
    """Work done while ``integrity`` may still run: it ends with the check's verdict.

    An error the work meets on a damaged database gives way to that verdict ("restore it from a backup
    first"); an interrupt stops the check (its connection closed, nothing left open) without waiting for it.
    """
    try:
        yield
    except Exception:
        try:
            integrity.wait()
        except NotADatabaseError as damage:
            raise damage from None
        except Exception:  # the check itself could not run: the work's own error says more
            pass
        raise
    except BaseException:
        integrity.stop()
        raise
    integrity.wait()


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


def _open_twin(path: Path) -> tuple[sqlite3.Connection, int] | None:
    """A second connection and what it sees of the commits so far; None if it cannot read right away."""
    try:
        # It never waits: a lock it would wait for can be one that waits for the first connection to finish.
        twin = connect(path, busy_timeout=0, check_same_thread=False)
    except (sqlite3.Error, KeyrotateError):
        return None
    try:
        return twin, data_version(twin)
    except sqlite3.Error:
        twin.close()
        return None


def twin_in_snapshot(conn: sqlite3.Connection, path: Path) -> sqlite3.Connection | None:
    """Pin ``conn``'s snapshot (just begun, nothing read yet) and open a second connection inside the same one.

    SQLite cannot hand a snapshot to another connection, but it tells a connection whether any other one has
    committed since it last looked (``PRAGMA data_version``). The twin looks before ``conn``'s snapshot begins
    and again as its own begins: the same number means nothing was committed in between, so both read the
    same database. None when something was (or the twin cannot read at once): the caller reads on ``conn``
    alone. The twin may be used from another thread.
    """
    opened = _open_twin(path)
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # conn's snapshot begins at its first read
    except BaseException:
        if opened is not None:
            opened[0].close()
        raise
    if opened is None:
        return None
    twin, seen = opened
    try:
        twin.execute("BEGIN")
        if data_version(twin) == seen:  # the twin's first read: its snapshot begins here
            return twin
    except sqlite3.Error:
        pass
    except BaseException:
        twin.close()
        raise
    twin.close()
    return None


@contextmanager
def read_session(db_path: Path, busy_timeout: float, *, twin: bool = False,
                 checked_first: bool = False) -> Iterator[ReadSession]:
    """Open, inspect and begin; always roll back and close; SQLite errors become keyrotate errors.

    With ``twin``, a second connection inside the same snapshot comes with it when SQLite can give one.
    The integrity check runs beside the whole read and has the last word; with ``checked_first`` (for
    work that shows what it finds as it goes) its verdict comes before anything is read.
    """
    conn, info, integrity = open_database(db_path, busy_timeout, for_writing=False, reading_only=True)
    session = ReadSession(conn, info, ())
    try:
        with damage_first(integrity):
            if checked_first:
                integrity.wait()
            session.resolved = tuple(resolve_catalogue(info.schema, info.version))
            with snapshot(conn):
                if twin:
                    session.twin = twin_in_snapshot(conn, db_path)
                yield session
    except sqlite3.Error as exc:
        raise translate_error(exc, db_path) from None
    finally:
        if session.twin is not None:  # nobody took it
            session.twin.close()
        conn.close()
