"""Secrets that open under no key: named by location and row (never content), summarised a few per location."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keyrotate.rotation.tallies import Tally
from keyrotate.store.database import quote_identifier
from keyrotate.trek.catalogue import CATALOGUE


@dataclass(frozen=True)
class FailedSecret:
    location: str
    table: str
    column: str
    row: Mapping[str, Any]
    path: str
    reason: str
    catalogued: bool = True  # blocks a rotation and fails verify (also a token outside the catalogue under no key)
    outside_catalogue: bool = False

    def describe(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.row.items())
        inside = f" at {self.path}" if self.path else ""
        return f"{self.location} ({where}){inside}: {self.reason}"


FAILURE_EXAMPLES = 3  # row ids shown per location; the JSON report has the longer list


def summarise_failures(failures: Iterable[FailedSecret], counts: Mapping[str, int]) -> list[tuple[FailedSecret, str]]:
    """One line per location (with its first failure, for the label): a single value described whole,
    several as a count and a few row ids. ``counts`` holds the true number per location label: the list is capped."""
    groups: dict[tuple[str, bool], list[FailedSecret]] = {}
    for failure in failures:
        groups.setdefault((failure.location, failure.catalogued), []).append(failure)
    out = []
    for (location, _), group in groups.items():
        total = max(counts.get(location, 0), len(group))
        if total == 1:
            out.append((group[0], group[0].describe()))
            continue
        shown = group[:FAILURE_EXAMPLES]
        reasons = {failure.reason for failure in group}
        if len(reasons) == 1:
            examples = "; ".join(_where(failure) for failure in shown)
            line = f"{location}: {total} values: {group[0].reason} (for example {examples}"
        else:
            examples = "; ".join(f"{_where(failure)}: {failure.reason}" for failure in shown)
            line = f"{location}: {total} values (for example {examples}"
        out.append((group[0], line + ("; --json lists more)" if total > len(shown) else ")")))
    return out


def _where(failure: FailedSecret) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in failure.row.items()) + ")" + (f" at {failure.path}" if failure.path else "")


def name_failures(conn: sqlite3.Connection, tallies: dict[str, Tally]) -> tuple[FailedSecret, ...]:
    """Name each failing value by its row's identifying columns (never its content): one query per location."""
    identities = {(loc.table, loc.column): loc.identity for loc in CATALOGUE}
    out = []
    for tally in tallies.values():
        if not tally.failures:
            continue
        columns = identities.get((tally.table, tally.column), ("rowid",))
        select = ", ".join(quote_identifier(c) if c != "rowid" else "rowid" for c in columns)
        rowids = sorted({failure.rowid for failure in tally.failures})
        try:
            rows = conn.execute(
                f"SELECT rowid, {select} FROM {quote_identifier(tally.table)} "
                f"WHERE rowid IN ({', '.join('?' * len(rowids))})", rowids,
            ).fetchall()
        except sqlite3.Error:
            rows = []
        found = {row[0]: dict(zip(columns, row[1:], strict=True)) for row in rows}
        for failure in tally.failures:
            identity = found.get(failure.rowid, {"rowid": failure.rowid})
            out.append(FailedSecret(tally.label, failure.table, failure.column, identity, failure.path, failure.reason,
                                    tally.catalogued, tally.outside or not tally.catalogued))
    return tuple(out)
