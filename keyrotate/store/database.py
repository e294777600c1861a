"""Opening a SQLite database safely, locking it, and the transactions and checkpoints around a rotation.

All access goes through SQLite itself, so committed data still waiting in the
``-wal`` file is always seen (copying ``travel.db`` alone would lose it).
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from keyrotate.errors import (
    CannotWriteError,
    DatabaseBusyError,
    InputNotFoundError,
    NotADatabaseError,
)

SQLITE_HEADER = b"SQLite format 3\x00"
# Page cache for the rotation's write connection: fixed, so memory stays flat however large the database. When the
# transaction outgrows it, SQLite spills dirty pages (in WAL mode to the -wal, where a page written again by the same
# transaction is overwritten in place) and reads them back from the OS's cache: at 370,000 secrets 4 MB makes ~28 %
# more page reads and writes than 16 MB (the users table, 8 MB, is rewritten once per secret column), yet rotate's
# CPU and wall medians over alternating runs stayed within the noise (issue 11), and it takes 12 MB less.
WRITE_CACHE_KIB = 4 * 1024
# Page cache for work that goes through each page once: the backup copy and its integrity check, and VACUUM (which
# gives the temporary copy it builds a cache as large as the connection's). More only costs memory.
PASS_THROUGH_CACHE_KIB = 256

def locate_database(db: Path | None, data_dir: Path | None) -> Path:
    """The database file named by ``--db`` or inside ``--data-dir``."""
    if data_dir is not None and db is None:
        db = _database_in(data_dir)
    elif db is None or data_dir is not None:
        raise ValueError("exactly one of db and data_dir")
    if not db.exists():
        raise InputNotFoundError(f"Database {db} does not exist.")
    if db.is_dir():
        raise InputNotFoundError(f"{db} is a directory. Use --data-dir for TREK's data directory, or --db for travel.db.")
    check_sqlite_header(db)
    return db


def _database_in(data_dir: Path) -> Path:
    if not data_dir.exists():
        raise InputNotFoundError(f"Data directory {data_dir} does not exist.")
    if not data_dir.is_dir():
        raise InputNotFoundError(f"{data_dir} is not a directory. Use --db for a database file.")
    db = data_dir / "travel.db"
    if not db.exists():
        raise InputNotFoundError(f"{data_dir} has no travel.db. Is this TREK's data directory?")
    return db


def check_sqlite_header(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise InputNotFoundError(f"Cannot read {path}: {exc.strerror}.") from None
    if header != SQLITE_HEADER:
        what = "empty" if not header else "not a SQLite database"
        raise NotADatabaseError(f"{path} is {what}. Point keyrotate at TREK's travel.db.")


def check_writable(path: Path) -> None:
    """Refuse up front when the database or its directory cannot be written.

    A file with no write bit at all is treated as read-only even for root:
    someone made it so on purpose.
    """
    for target, what in ((path, "database file"), (path.parent, "directory")):
        mode = target.stat().st_mode
        if not os.access(target, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise CannotWriteError(
                f"The {what} {target} is read-only. keyrotate needs to write the database, its journal and the "
                "backup there. Nothing was changed."
            )


def _uri(path: Path, mode: str) -> str:
    return f"file:{quote(str(path.resolve()))}?mode={mode}"


def read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only (``sqlite3.connect(..., uri=True)``)."""
    return _uri(path, "ro")


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's ``PRAGMA data_version`` on ``conn``: it moves whenever another connection commits, never for
    ``conn``'s own commits."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def connect(path: Path, *, busy_timeout: float = 5.0, check_same_thread: bool = True,
            for_writing: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit).

    Opened read-write even for read-only work: only a read-write connection can
    tidy up the ``-wal`` and ``-shm`` files when it closes, so a verify leaves
    the directory as it found it. No data is written unless asked. But when the
    ``-wal`` holds changes (TREK was stopped before it wrote them into the main
    file), a reading is read-only: the last read-write connection to close would
    fold the ``-wal`` into the main file, changing the bytes of a database (or of
    a stolen copy, evidence) that was only to be read.
    """
    if not for_writing and _wal_holds_changes(path):
        conn = _read_only_beside_wal(path, busy_timeout, check_same_thread)
        if conn is not None:
            return conn
    try:
        conn = sqlite3.connect(_uri(path, "rw"), uri=True, isolation_level=None, timeout=busy_timeout,
                               check_same_thread=check_same_thread)
    except sqlite3.OperationalError:
        try:
            conn = sqlite3.connect(_uri(path, "ro"), uri=True, isolation_level=None, timeout=busy_timeout,
                                   check_same_thread=check_same_thread)
        except sqlite3.OperationalError as exc:
            raise NotADatabaseError(f"SQLite cannot open {path}: {exc}.") from None
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:  # anything but CANTOPEN: the caller's first query meets it again
        if exc.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN:
            conn.close()
            conn = _open_on_read_only_media(path, busy_timeout, check_same_thread)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _wal_holds_changes(path: Path) -> bool:
    try:
        return os.path.getsize(f"{path}-wal") > 0
    except OSError:
        return False


def _read_only_beside_wal(path: Path, busy_timeout: float, check_same_thread: bool) -> sqlite3.Connection | None:
    """A read-only connection that reads through the ``-wal``, or None where SQLite cannot give one (the
    read-write connection is tried then, as before)."""
    try:
        conn = sqlite3.connect(_uri(path, "ro"), uri=True, isolation_level=None, timeout=busy_timeout,
                               check_same_thread=check_same_thread)
    except sqlite3.Error:
        return None
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error:
        conn.close()
        return None
    return conn


def _open_on_read_only_media(path: Path, busy_timeout: float, check_same_thread: bool) -> sqlite3.Connection:
    """A WAL database in a directory nobody may write (a read-only bind mount, a snapshot): SQLite cannot make
    the ``-shm`` file it reads a WAL database through. With no ``-wal`` file holding changes, the main file is
    the whole database and opens as immutable (read without any lock or ``-shm``); otherwise it cannot be read
    truthfully here."""
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise CannotWriteError(
            f"SQLite cannot open the -shm file it reads {path} through (a read-only directory or mount, or a -shm "
            f"file this user may not open), and {wal.name} beside it holds changes it reads only that way. Copy the "
            "data directory somewhere writable (cp -a) and point keyrotate at the copy; nothing was changed."
        )
    return sqlite3.connect(_uri(path, "ro") + "&immutable=1", uri=True, isolation_level=None, timeout=busy_timeout,
                           check_same_thread=check_same_thread)


def translate_error(exc: sqlite3.Error, path: Path) -> Exception:
    """Turn a SQLite error into a keyrotate error that says what to do."""
    text = str(exc).lower()
    if text.startswith("could not decode to utf-8"):  # first: the rest of this message is the value, a secret
        # SQLite's message goes on "... with text '<the value>'": only the column is repeated here.
        return NotADatabaseError(
            f"{path}: a value in the column {_undecodable_column(str(exc))} is not valid UTF-8 text, "
            "which TREK never writes (another program or a damaged disk did). keyrotate reads no such value; "
            "nothing was changed. Set that value again in TREK (or restore the database from a backup), then run "
            "keyrotate again."
        )
    if is_busy(exc):
        return DatabaseBusyError(
            f"{path} is locked by another program (is TREK still running?). Stop TREK, then run keyrotate again "
            "(--wait sets how long keyrotate waits for the lock). Nothing was changed."
        )
    if "readonly" in text or "read-only" in text:
        journal = Path(f"{path}-journal")
        if journal.is_file() and journal.stat().st_size > 0:  # even a reading must roll a crash's journal back first
            return CannotWriteError(
                f"{path} cannot be written ({exc}), and {journal.name} beside it is the journal of a write that "
                "stopped halfway: SQLite must roll it back (a write) before anyone can read the database. Copy the "
                "data directory somewhere writable (cp -a) and point keyrotate at the copy; nothing was changed.")
        return CannotWriteError(f"{path} cannot be written ({exc}). Nothing was changed.")
    if "full" in text or "disk i/o" in text:
        return CannotWriteError(f"Writing {path} failed ({exc}). Free some space; nothing was changed.")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return NotADatabaseError(
            f"{path} is damaged or not a database ({exc}). Restore it from a backup first; nothing was changed."
        )
    return exc


# "Could not decode to UTF-8 column 'maps_api_key' with text '...'", the column being the query's expression for
# it, where keyrotate's searches give the first quoted name; SQLite cuts the message at about 200 characters.
_UNDECODABLE_COLUMN = re.compile(r"""Could not decode to UTF-8 column '(?:([^'"]*)' with text|[^"]*"((?:[^"]|"")*)")""")


def _undecodable_column(message: str) -> str:
    found = _UNDECODABLE_COLUMN.match(message)
    if found is None:
        return "(not named by SQLite)"
    return found.group(1) if found.group(1) is not None else found.group(2).replace('""', '"')


def is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier, the one rule for every name keyrotate puts in SQL: in double
    quotes, a double quote inside doubled (sqlite-utils' ``quote_identifier`` too; SQLite's own rule)."""
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def write_transaction(
    conn: sqlite3.Connection, path: Path, *, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... caller commits; rolls back on any exception.

    ``on_wait`` is called once if another connection holds the write lock, before
    waiting for it (up to the connection's busy timeout).
    """
    try:
        if on_wait is None:
            conn.execute("BEGIN IMMEDIATE")
        elif not _try_begin_immediate(conn):
            on_wait()
            conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise translate_error(exc, path) from None
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _try_begin_immediate(conn: sqlite3.Connection) -> bool:
    """``BEGIN IMMEDIATE`` without waiting; False if another writer holds the lock."""
    timeout = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout = {timeout}")


def checkpoint(conn: sqlite3.Connection) -> bool:
    """Move everything into the main file and empty the ``-wal`` (old ciphertexts included).

    False when another connection kept SQLite from finishing the checkpoint.
    """
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        return True
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return int(busy) == 0
