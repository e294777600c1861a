"""Reading a database's schema and deciding whether it is TREK's, and which TREK."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from keyrotate.errors import NotTrekError
from keyrotate.store.database import quote_identifier, translate_error
from keyrotate.trek.catalogue import TrekVersion, detect_trek_version

TREK_TABLES = ("users", "settings", "app_settings")


@dataclass(frozen=True)
class DatabaseInfo:
    path: Path
    schema: dict[str, tuple[str, ...]]
    without_rowid: frozenset[str]
    schema_version: int | None
    version: TrekVersion


def inspect_database(conn: sqlite3.Connection, path: Path) -> DatabaseInfo:
    """Read the schema and decide whether this is TREK's database."""
    try:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError as exc:
        raise translate_error(exc, path) from None
    schema: dict[str, tuple[str, ...]] = {}
    without_rowid = set()
    for name, sql in rows:
        if name.startswith("sqlite_"):
            continue
        columns = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({quote_identifier(name)})"))
        schema[name] = columns
        if sql and "WITHOUT ROWID" in sql.upper():
            without_rowid.add(name)
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
    return DatabaseInfo(path, schema, frozenset(without_rowid), schema_version,
                        detect_trek_version(schema, schema_version))
