"""Reading a database's schema and deciding whether it is TREK's, and which TREK."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from keyrotate.errors import NotADatabaseError, NotTrekError
from keyrotate.store.database import quote_identifier, translate_error
from keyrotate.trek.catalogue import TrekVersion, detect_trek_version

TREK_TABLES = ("users", "settings", "app_settings")
# PRAGMA table_list says which tables are WITHOUT ROWID, virtual or an FTS index's shadow tables.
TABLE_LIST_SINCE = (3, 37, 0)


@dataclass(frozen=True)
class DatabaseInfo:
    path: Path
    schema: dict[str, tuple[str, ...]]  # ordinary tables only: no virtual, shadow or sqlite_ tables
    without_rowid: frozenset[str]
    schema_version: int | None
    version: TrekVersion


def inspect_database(conn: sqlite3.Connection, path: Path) -> DatabaseInfo:
    """Read the schema and decide whether this is TREK's database."""
    try:
        schema, without_rowid = _ordinary_tables(conn)
    except sqlite3.DatabaseError as exc:
        raise translate_error(exc, path) from None
    missing = [t for t in TREK_TABLES if t not in schema]
    if missing or "password_hash" not in schema.get("users", ()):
        raise NotTrekError(
            f"{path} is a SQLite database but not TREK's (missing: "
            f"{', '.join(missing) or 'users.password_hash'}). Point keyrotate at TREK's data/travel.db."
        )
    schema_version = None
    if "schema_version" in schema:
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        schema_version = row[0] if row and isinstance(row[0], int) else None
    return DatabaseInfo(path, schema, without_rowid, schema_version, detect_trek_version(schema, schema_version))


def _ordinary_tables(conn: sqlite3.Connection) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """Each ordinary table of the main database with its columns, and which of them are WITHOUT ROWID.

    Virtual tables and the shadow tables behind them (an FTS5 index's ``*_data``, ``*_content``...)
    hold no secret TREK wrote, and only SQLite may change them.
    """
    if sqlite3.sqlite_version_info < TABLE_LIST_SINCE:
        raise NotADatabaseError(
            f"keyrotate needs SQLite {'.'.join(map(str, TABLE_LIST_SINCE))} or newer to read the schema; this "
            f"Python has SQLite {sqlite3.sqlite_version}. Use a newer Python (for example the python:3.12 image)."
        )
    schema: dict[str, tuple[str, ...]] = {}
    without_rowid = set()
    for name, without in conn.execute(  # in the order the tables were created, as sqlite_master lists them
        "SELECT t.name, t.wr FROM sqlite_master AS m JOIN pragma_table_list AS t ON t.name = m.name "
        "WHERE m.type = 'table' AND t.schema = 'main' AND t.type = 'table' ORDER BY m.rowid"
    ).fetchall():
        if name.startswith("sqlite_"):
            continue
        schema[name] = tuple(row[1] for row in conn.execute(f"PRAGMA main.table_info({quote_identifier(name)})"))
        if without:
            without_rowid.add(name)
    return schema, frozenset(without_rowid)
