"""Reading a database's schema and deciding whether it is TREK's, and which TREK."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keyrotate.errors import NotTrekError
from keyrotate.store.database import translate_error
from keyrotate.trek.catalogue import CATALOGUE, TrekVersion, detect_trek_version

if TYPE_CHECKING:
    from sqlite_utils import Database

TREK_TABLES = ("users", "settings", "app_settings")
# The tables a virtual table's module keeps its data in (SQLite's "shadow tables", named <table>_<suffix>).
SHADOW_SUFFIXES = {
    "FTS3": frozenset({"content", "segments", "segdir", "docsize", "stat"}),
    "FTS4": frozenset({"content", "segments", "segdir", "docsize", "stat"}),
    "FTS5": frozenset({"data", "idx", "content", "docsize", "config"}),
    "RTREE": frozenset({"node", "parent", "rowid"}),
    "GEOPOLY": frozenset({"node", "parent", "rowid"}),
}
# A CREATE TABLE statement's tokens: quoted names and strings whole, comments apart, words, single characters.
# SQLite matches names without regard to the case of ASCII letters (only those): ``MFA_Secret`` is TREK's
# ``mfa_secret``. Names that could be TREK's are folded so on reading, and the folded name is what every query
# then uses; any other name is kept as written (it is shown in reports).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_TREK_LIKE_NAME = re.compile(r"[A-Za-z0-9_]+")
_SQL_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|--[^\n]*|/\*.*?(?:\*/|\Z)|\w+|\S""",
                        re.DOTALL)


@dataclass(frozen=True)
class DatabaseInfo:
    path: Path
    schema: dict[str, tuple[str, ...]]  # ordinary tables only (no virtual, shadow or sqlite_ tables); names folded
    without_rowid: frozenset[str]
    schema_version: int | None
    version: TrekVersion
    # Tables whose rowid is an INTEGER PRIMARY KEY: the only ones whose rowids VACUUM must keep.
    rowid_alias: frozenset[str] = frozenset()
    # Rowid tables with a column named rowid (in any case): there the name means the column, not the row.
    rowid_hidden: frozenset[str] = frozenset()
    # The shadow tables holding a full-text table's own copy of its text (``<fts>_content``), with their columns:
    # left out of ``schema`` (only SQLite may change them), but a token there must not go unseen.
    index_content: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def unaddressable(self) -> frozenset[str]:
        """Tables whose rows keyrotate cannot name by ``rowid``: WITHOUT ROWID, or a column named so."""
        return self.without_rowid | self.rowid_hidden


@dataclass(frozen=True)
class TableKinds:
    """Which tables of the main database keyrotate leaves out, and which of the others are WITHOUT ROWID.

    Virtual tables and their shadow tables (an FTS5 index's ``*_data``, ``*_content``...)
    hold no secret TREK wrote, and only SQLite may change them.
    """

    left_out: frozenset[str]
    without_rowid: frozenset[str]
    index_content: frozenset[str] = frozenset()  # of the left out: full-text tables' ``<table>_content``


def inspect_database(conn: sqlite3.Connection, path: Path) -> DatabaseInfo:
    """Read the schema and decide whether this is TREK's database."""
    try:
        schema, without_rowid, rowid_alias, index_content = _ordinary_tables(conn)
    except sqlite3.DatabaseError as exc:
        raise translate_error(exc, path) from None
    hidden = frozenset(t for t, columns in schema.items() if t not in without_rowid and "rowid" in columns)
    missing = [t for t in TREK_TABLES if t not in schema]
    if missing or "password_hash" not in schema.get("users", ()):
        raise NotTrekError(
            f"{path} is a SQLite database but not TREK's (missing: "
            f"{', '.join(missing) or 'users.password_hash'}). Point keyrotate at TREK's data/travel.db."
        )
    schema_version = None
    if "version" in schema.get("schema_version", ()):  # a marker table without the column: as if there were none
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        schema_version = row[0] if row and isinstance(row[0], int) else None
    info = DatabaseInfo(path, schema, without_rowid, schema_version, detect_trek_version(schema, schema_version),
                        rowid_alias, hidden, index_content)
    _refuse_unaddressable_secret_tables(info)
    return info


def fold_name(name: str) -> str:
    """A table or column name as keyrotate keeps it: one that could be TREK's (ASCII letters, digits and ``_``,
    as all of TREK's are) in lower case, as SQLite compares it; any other as it is."""
    return name.translate(_ASCII_LOWER) if _TREK_LIKE_NAME.fullmatch(name) else name


def _refuse_unaddressable_secret_tables(info: DatabaseInfo) -> None:
    """TREK keeps its secrets in ordinary rowid tables; keyrotate reads and rewrites them by rowid, so a
    secret table changed to WITHOUT ROWID, or given a column named rowid, is refused before anything is read."""
    odd = sorted({loc.table for loc in CATALOGUE if loc.table in info.unaddressable})
    if odd:
        tables = ", ".join(odd)
        raise NotTrekError(
            f"{info.path}: {tables}, where TREK keeps secrets, {'is' if len(odd) == 1 else 'are'} not an ordinary "
            "table with row ids here (declared WITHOUT ROWID, or given a column named rowid); no TREK release makes "
            "it so. keyrotate cannot rewrite such rows safely and changed nothing: restore the table as TREK created "
            "it, or the database from a backup."
        )


def _ordinary_tables(
    conn: sqlite3.Connection,
) -> tuple[dict[str, tuple[str, ...]], frozenset[str], frozenset[str], dict[str, tuple[str, ...]]]:
    """Each ordinary table of the main database with its columns (in the order the tables were created),
    which of them are WITHOUT ROWID, which have an INTEGER PRIMARY KEY as their rowid, and the full-text
    tables' content tables with their columns.

    Read with SQLite's own PRAGMAs (the queries sqlite-utils makes for ``Database.tables``): importing
    sqlite-utils cost every command 40-80 ms of its start, 6-7 % of a `verify` at 370,000 secrets (issue 11).
    """
    kinds = kinds_from_table_list(conn)
    if kinds is None:  # SQLite before 3.37 (the Python of RHEL 9 has 3.34)
        kinds = kinds_from_create_statements(conn)
    names = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")
             if name not in kinds.left_out and not name.startswith("sqlite_")]
    schema: dict[str, tuple[str, ...]] = {}
    alias: set[str] = set()
    for name in names:
        columns = conn.execute("SELECT name, type, pk FROM pragma_table_info(?, 'main') ORDER BY cid",
                               (name,)).fetchall()
        schema[fold_name(name)] = tuple(fold_name(column) for column, _, _ in columns)
        if name not in kinds.without_rowid and _has_rowid_alias(conn, name, columns):
            alias.add(fold_name(name))
    content = {fold_name(name): tuple(fold_name(column) for (column,) in conn.execute(
        "SELECT name FROM pragma_table_info(?, 'main') ORDER BY cid", (name,))) for name in sorted(kinds.index_content)}
    return schema, frozenset(map(fold_name, kinds.without_rowid)), frozenset(alias), content


def _has_rowid_alias(conn: sqlite3.Connection, table: str, columns: list[tuple[str, str, int]]) -> bool:
    """Whether the table's rowid is an INTEGER PRIMARY KEY column, which VACUUM never renumbers.

    SQLite: "The VACUUM command may change the ROWIDs of entries in any tables that do not have an
    explicit INTEGER PRIMARY KEY." A single primary-key column declared INTEGER is the rowid unless
    SQLite made an index for it (``INTEGER PRIMARY KEY DESC`` in the column definition is not an alias).
    ``columns``: the table's ``(name, declared type, place in the primary key)``, as ``PRAGMA table_info`` has them.
    """
    pk = [declared for _, declared, place in columns if place]
    if len(pk) != 1 or (pk[0] or "").upper() != "INTEGER":
        return False
    origins = conn.execute("SELECT origin FROM pragma_index_list(?, 'main')", (table,)).fetchall()
    return ("pk",) not in origins


def introspect(conn: sqlite3.Connection) -> Database:
    """sqlite-utils' view of ``conn``, for reading the CREATE statements; it leaves the connection as it was.

    Without ``recursive_triggers=False`` it would turn on recursive triggers on keyrotate's connection, and
    without ``execute_plugins=False`` an installed sqlite-utils plugin could register functions on it; when
    only reading it begins and commits nothing (tests/test_schema.py checks all three).
    """
    # Imported here, only where SQLite cannot tell a table's kind itself (before 3.37): the import costs 40-80 ms
    # on the 2-core dev VM, 150 ms when numpy is installed (sqlite-utils imports it if it can; the CLI's process
    # keeps numpy out, see keyrotate.__main__.keep_out_unused_modules).
    from sqlite_utils import Database

    return Database(conn, recursive_triggers=False, execute_plugins=False)


def kinds_from_table_list(conn: sqlite3.Connection) -> TableKinds | None:
    """What ``PRAGMA table_list`` (SQLite 3.37 and newer) says; None where SQLite does not know it."""
    try:
        rows = conn.execute("SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main'").fetchall()
    except sqlite3.OperationalError as exc:
        if "pragma_table_list" in str(exc):  # "no such table: pragma_table_list"
            return None
        raise
    virtual = {name.lower() for name, kind, _ in rows if kind == "virtual"}
    return TableKinds(
        left_out=frozenset(name for name, kind, _ in rows if kind in ("virtual", "shadow")),
        without_rowid=frozenset(name for name, kind, wr in rows if kind == "table" and wr
                                and not name.startswith("sqlite_")),
        index_content=frozenset(name for name, kind, _ in rows if kind == "shadow"
                                and name.lower().removesuffix("_content") in virtual - {name.lower()}),
    )


def kinds_from_create_statements(conn: sqlite3.Connection) -> TableKinds:
    """The same answer as :func:`kinds_from_table_list`, read from the CREATE statements, for older SQLite."""
    tables = introspect(conn).tables
    modules = {t.name.lower(): t.virtual_table_using for t in tables if t.virtual_table_using}

    def is_shadow(name: str) -> bool:
        owner, _, suffix = name.lower().rpartition("_")
        module = modules.get(owner)
        return module is not None and suffix in SHADOW_SUFFIXES.get(module, frozenset())

    left_out = frozenset(t.name for t in tables if t.name.lower() in modules or is_shadow(t.name))
    return TableKinds(
        left_out=left_out,
        without_rowid=frozenset(t.name for t in tables if t.name not in left_out and not t.name.startswith("sqlite_")
                                and declares_without_rowid(t.schema)),
        index_content=frozenset(t.name for t in tables if is_shadow(t.name) and t.name.lower().endswith("_content")),
    )


def declares_without_rowid(create_table: str) -> bool:
    """Whether a CREATE TABLE statement ends with the option WITHOUT ROWID (next to STRICT, in either order).

    The options follow the parenthesis that closes the column list; the words WITHOUT ROWID
    anywhere else (a default value, a comment, a name) do not count.
    """
    words = [t.upper() for t in _SQL_TOKEN.findall(create_table) if not t.startswith(("--", "/*"))]
    if ")" not in words:
        return False
    options = words[len(words) - words[::-1].index(")"):]
    return any(options[i:i + 2] == ["WITHOUT", "ROWID"] for i in range(len(options) - 1))
