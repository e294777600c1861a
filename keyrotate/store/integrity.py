"""SQLite's integrity check of a database, on the caller's connection or beside the caller's work."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from keyrotate.errors import NotADatabaseError
from keyrotate.store.database import PASS_THROUGH_CACHE_KIB, connect, is_busy, translate_error
from keyrotate.store.in_thread import StoppableRead


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise translate_error(exc, path) from None
        raise NotADatabaseError(f"{path} is damaged: {exc}. Restore it from a backup first.") from None
    if result != ["ok"]:
        raise NotADatabaseError(
            f"{path} fails SQLite's integrity check ({result[0]}). Refusing to touch a damaged database: "
            "restore it from a backup first."
        )


class IntegrityCheck:
    """:func:`check_integrity` on a connection and thread of its own: the caller goes on reading meanwhile (the
    schema, or a whole pass; SQLite checks without holding Python's lock). :meth:`wait` raises what it found.

    Begun at once, or (``at_once=False``) only when first waited for and not :meth:`covered` by then: a
    rotation's backup gets the same verdict from its own check of a page-for-page copy of the database.
    """

    def __init__(self, path: Path, busy_timeout: float, *, at_once: bool = True) -> None:
        self._path = path
        self._check = StoppableRead(lambda: connect(path, busy_timeout=busy_timeout), self._run, "keyrotate-integrity")
        self._begun = at_once
        self._covered = False
        if at_once:
            self._check.start()

    def _run(self, conn: sqlite3.Connection) -> None:
        if not self._check.stopped:
            conn.execute(f"PRAGMA cache_size = -{PASS_THROUGH_CACHE_KIB}")
            check_integrity(conn, self._path)

    def covered(self) -> None:
        """Another check of the very same pages passed: one not begun yet is not needed any more."""
        self._covered = True

    def wait(self) -> None:
        if not self._begun:
            if self._covered:
                return
            self._begun = True
            self._check.start()
        self._check.result()

    def stop(self) -> None:
        """Cut the check short and wait until its connection is closed (nothing left open behind an error)."""
        if self._begun:
            self._check.stop()
