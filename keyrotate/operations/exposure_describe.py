"""Turning the rows a suspected key opens into words: what each secret is, whose, where it is revoked.

The Scanner reports each opened token by location and row id, in the order it
reads them. Whole-column secrets (photo passphrases, users' API keys, settings:
nearly all of a large database) wait in a short buffer per location; each flush
reads their rows' identifying columns and owners' names in one range query and
counts them per (owner, kind), handing rows on as :class:`SecretRows`. Tokens
inside JSON values and outside the catalogue (few) are described one by one.
Memory holds the buffer and, per user, its name (read once) and a counter per kind
(:class:`GroupTally`): nothing per secret.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from keyrotate.operations.exposure_groups import GroupTally, tier_of
from keyrotate.operations.exposure_records import SecretHead, SecretRows, owner_label
from keyrotate.store.database import quote_identifier
from keyrotate.trek.catalogue import CATALOGUE, JsonSecrets, SecretLocation
from keyrotate.trek.formats import Scheme

MFA_ADVICE = "the user must disable and re-enrol MFA in TREK (the TOTP seed is compromised; old codes keep working until then)"
FLUSH_EVERY = 2000  # hits described per bulk read: bounds memory whatever the number of secrets
COUNTS_KEPT = 20_000  # (owner, kind) counts a location keeps before adding them to the groups
UNKNOWN_ACTION = "find out what this value is for and reissue it where it was issued"
_ARRAY_INDEX = re.compile(r"^\$\[(\d+)\]")
_FIELD = re.compile(r"^\$\.([^.\[]+)$")

RowsSink = Callable[[SecretRows], None]
# Rows of a location's range query: rowid, owner, detail, then the identifying columns.
_OWNER_DETAIL = itemgetter(1, 2)
_IDENTITY = itemgetter(slice(3, None))


@dataclass(frozen=True)
class _ColumnQuery:
    """One whole-column location: the range query that describes its hits, worked out once, and its counts."""

    location: SecretLocation
    sql: str
    params: tuple[Any, ...]
    identity: tuple[str, ...]
    detail: str | None  # the column that refines the description (provider, plugin_id)
    action: str
    tier_of: dict[bool, tuple[int, str]]  # instance secret? -> the group
    whats: dict[Any, str] = field(default_factory=dict)  # detail -> description
    counts: Counter[tuple[Any, Any]] = field(default_factory=Counter)  # (owner, detail) -> secrets not yet in groups


class Describer:
    """Receives the Scanner's tokens (:meth:`on_token`), counts them into ``groups``, hands rows to ``emit``."""

    def __init__(self, conn: sqlite3.Connection, schema: dict[str, tuple[str, ...]], groups: GroupTally,
                 emit: RowsSink | None) -> None:
        self.conn = conn
        self.schema = schema
        self.groups = groups
        self.emit = emit  # None: only the group counts are wanted, which is much cheaper
        self.missed = 0
        self.by_label = {loc.label: loc for loc in CATALOGUE}
        self._whole_value = frozenset(loc.label for loc in CATALOGUE if loc.whole_value)
        self._columns: dict[str, list[str]] = {}
        self._queries: dict[str, _ColumnQuery] = {}
        self._bulk_label: str | None = None
        self._bulk: list[int] = []  # row ids of the current whole-column location
        self._buffer: list[tuple[str, str, str, int, str]] = []
        self._names_of = groups.names  # users.id -> username: each user's name read once, kept for the pass
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}
        self._field_labels: dict[tuple[str, str], str] = {}
        if "plugin_settings_fields" in schema and "label" in schema["plugin_settings_fields"]:
            for plugin_id, key, label in conn.execute("SELECT plugin_id, field_key, label FROM plugin_settings_fields"):
                self._field_labels[(str(plugin_id), str(key))] = str(label or key)

    def on_token(self, label: str, table: str, column: str, rowid: int, path: str, index: int | None) -> None:
        if index is None:
            self.missed += 1
            return
        if label == self._bulk_label:  # the common case: one more row of the location being read
            self._bulk.append(rowid)
            if len(self._bulk) >= FLUSH_EVERY:
                self._flush_bulk()
            return
        # Anything else: what waits is described first, so rows go out in the order they were found.
        self._flush_bulk()
        if label in self._whole_value:
            self.flush()
            self._bulk_label = label
            self._bulk.append(rowid)
            return
        self._bulk_label = None
        self._buffer.append((label, table, column, rowid, path))
        if len(self._buffer) >= FLUSH_EVERY:
            self.flush()

    def finish(self) -> None:
        """Describe what still waits, and count every whole-column location into the groups."""
        self._flush_bulk()
        self.flush()
        for query in self._queries.values():
            self._count(query)

    # -- whole-column locations: nearly every secret ------------------------------------

    def _flush_bulk(self) -> None:
        if not self._bulk:
            return
        assert self._bulk_label is not None
        loc = self.by_label[self._bulk_label]
        hits = set(self._bulk)
        self._bulk.clear()
        query = self._query(loc)
        # Batches done here while the workers are busy arrive before older ones: not always ascending.
        found = [row for row in self.conn.execute(query.sql, (min(hits), max(hits), *query.params))
                 if row[0] in hits]
        keys = list(map(_OWNER_DETAIL, found))
        query.counts.update(keys)
        if len(query.counts) > COUNTS_KEPT:
            self._count(query)
        if self.emit is None:
            return
        distinct = set(keys)
        self.load_names(owner for owner, _ in distinct if isinstance(owner, int))
        heads = self._heads(query, distinct)
        self.emit(SecretRows(loc.label, loc.table, loc.column, query.action, query.identity,
                             list(map(heads.__getitem__, keys)), list(map(_IDENTITY, found))))

    def _heads(self, query: _ColumnQuery, keys: Iterable[tuple[Any, Any]]) -> dict[tuple[Any, Any], SecretHead]:
        """What rows with each (owner, detail) say before their own identity: what, owner, owner_id, name, group.

        Called for nearly every secret (owners rarely repeat within a flush), so owner_label is written out here.
        """
        names, what_of = self._names_of, self._what_of
        instance, user = query.tier_of[True][1], query.tier_of[False][1]
        heads: dict[tuple[Any, Any], SecretHead] = {}
        for key in keys:
            owner, detail = key
            if isinstance(owner, int):
                name = names[owner]
                heads[key] = (what_of(query, detail), f"user {owner} ({name})" if name else f"user {owner}", owner,
                              name, user)
            else:
                heads[key] = (what_of(query, detail), "instance", None, None, instance)
        return heads

    def _count(self, query: _ColumnQuery) -> None:
        """Move a location's counts so far into the groups (GroupTally.add sums what falls together)."""
        self.load_names(owner for owner, _ in query.counts if isinstance(owner, int))
        users: dict[Any, list[tuple[int, int]]] = {}  # detail -> (owner, count)
        for (owner, detail), count in query.counts.items():
            if isinstance(owner, int):
                users.setdefault(detail, []).append((owner, count))
            else:
                self.groups.add(query.tier_of[True], None, self._what_of(query, detail), query.action, count)
        for detail, counts in users.items():
            self.groups.add_users(query.tier_of[False], self._what_of(query, detail), query.action, counts)
        query.counts.clear()

    def load_names(self, owners: Iterable[int]) -> None:
        """Make sure these owners' names are known: read once per user, in bulk."""
        missing = sorted(set(owners).difference(self._names_of))
        if not missing:
            return
        names: dict[int, str | None] = {}
        if "username" in self.schema.get("users", ()):
            for chunk in _chunks(missing):
                found = self.conn.execute(
                    f"SELECT id, username FROM users WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
                names.update((uid, str(name) if name is not None else None) for uid, name in found)
        self._names_of.update((uid, names.get(uid)) for uid in missing)

    def _query(self, loc: SecretLocation) -> _ColumnQuery:
        query = self._queries.get(loc.label)
        if query is None:
            query = self._queries[loc.label] = self._build_query(loc)
        return query

    def _build_query(self, loc: SecretLocation) -> _ColumnQuery:
        columns = self.schema[loc.table]
        detail = next((c for c in ("provider", "plugin_id") if c in columns), None)
        identity = tuple(c for c in self._identifying_columns(loc.table) if c in loc.identity)
        select = [f"t.{quote_identifier(loc.owner_column)}" if loc.owner_column else "NULL",
                  f"t.{quote_identifier(detail)}" if detail else "NULL"]
        if self.emit is not None:
            select += [f"t.{quote_identifier(c)}" for c in identity] or ["t.rowid"]
        value = f"t.{quote_identifier(loc.column)}"
        # Only rows with a value can be hits: the others are skipped inside SQLite.
        sql = (f"SELECT t.rowid, {', '.join(select)} FROM {quote_identifier(loc.table)} t "
               f"WHERE t.rowid BETWEEN ? AND ? AND {value} IS NOT NULL AND {value} != ''")
        params: tuple[Any, ...] = ()
        if loc.setting_key is not None:  # one key of a key-value table
            sql += f" AND t.{quote_identifier(loc.key_column)} = ?"
            params = (loc.setting_key,)
        action = MFA_ADVICE if loc.scheme is Scheme.MFA else loc.revoke_hint
        tiers = {instance: tier_of(loc.table, loc.column, None if instance else 0, True) for instance in (True, False)}
        return _ColumnQuery(loc, sql + " ORDER BY t.rowid", params, identity or ("rowid",), detail, action, tiers)

    def _what_of(self, query: _ColumnQuery, detail: Any) -> str:
        what = query.whats.get(detail)
        if what is None:
            what = query.whats[detail] = self._what(query.location, {str(query.detail): detail}, 0, "")
        return what

    # -- everything else: JSON fields and tokens outside the catalogue ------------------

    def flush(self) -> None:
        if not self._buffer:
            return
        self._rows.clear()
        self.load(self._buffer)
        add, emit = self.groups.add, self.emit
        for label, table, column, rowid, path in self._buffer:
            loc = self.by_label.get(label)
            row = self._rows.get((table, rowid), {})
            owner_column = loc.owner_column if loc else ("user_id" if "user_id" in row else None)
            owner_id = row.get(owner_column) if owner_column else None
            owner_id = owner_id if isinstance(owner_id, int) else None
            name = self._names_of[owner_id] if owner_id is not None else None
            owner = owner_label(owner_id, name)
            tier = tier_of(table, column, owner_id, loc is not None)
            if loc is None:
                what, action = f"unknown secret found outside the catalogue in {table}.{column}", UNKNOWN_ACTION
            else:
                what = self._what(loc, row, rowid, path)
                action = MFA_ADVICE if loc.scheme is Scheme.MFA else loc.revoke_hint
            add(tier, owner_id, what, action)
            if emit is not None:
                identity = loc.identity if loc else tuple(c for c in ("id", "user_id", "key") if c in self.schema[table])
                ident = {c: row.get(c) for c in identity} or {"rowid": rowid}
                emit(SecretRows(label, table, column, action, tuple(ident), [(what, owner, owner_id, name, tier[1])],
                                [tuple(ident.values())], [path]))
        self._buffer.clear()

    def _what(self, loc: SecretLocation, row: dict[str, Any], rowid: int, path: str) -> str:
        if loc.json_secrets is JsonSecrets.S3_BACKENDS:
            return f"{loc.what} for backend {self._backend_name(rowid, path)!r}"
        plugin = str(row.get("plugin_id") or row.get("id") or "?")
        if loc.json_secrets in (JsonSecrets.PLUGIN_INSTANCE, JsonSecrets.PLUGIN_USER):
            match = _FIELD.match(path)
            field_key = match.group(1) if match else path
            field_label = self._field_labels.get((plugin, field_key), field_key)
            scope = "instance setting" if loc.json_secrets is JsonSecrets.PLUGIN_INSTANCE else "user setting"
            return f"plugin {scope} '{field_label}' ({field_key}) for {plugin}"
        if loc.table == "plugin_oauth_tokens":
            return f"{loc.what} for {plugin}"
        if loc.table in ("trip_album_links", "trek_photos") and row.get("provider"):
            return f"{loc.what} ({row['provider']})"
        return loc.what

    def _backend_name(self, rowid: int, path: str) -> str:
        match = _ARRAY_INDEX.match(path)
        value = self.conn.execute("SELECT value FROM app_settings WHERE rowid = ?", (rowid,)).fetchone()
        try:
            backends = json.loads(value[0]) if value else None
            backend = backends[int(match.group(1))] if match and isinstance(backends, list) else None
            name = backend.get("name") if isinstance(backend, dict) else None
        except (ValueError, TypeError, IndexError):
            name = None
        return str(name) if name else path

    def load(self, hits: Sequence[tuple[str, str, str, int, str]]) -> None:
        """Read the identifying columns of every hit's row, and their users' names, in bulk."""
        by_table: dict[str, set[int]] = {}
        for hit in hits:
            by_table.setdefault(hit[1], set()).add(hit[3])
        owners: set[int] = set()
        for table, wanted in by_table.items():
            columns = self._identifying_columns(table)
            if not columns:
                continue
            owner_columns = [i for i, c in enumerate(columns) if c in ("id", "user_id", "owner_id")]
            for rowid, *values in self._fetch(table, columns, sorted(wanted)):
                if rowid in wanted:
                    self._rows[(table, rowid)] = dict(zip(columns, values, strict=True))
                    owners.update(v for i in owner_columns if isinstance(v := values[i], int))
        self.load_names(owners)

    def _fetch(self, table: str, columns: list[str], rowids: list[int]) -> Iterator[tuple[Any, ...]]:
        """Dense rowids (a location read in order) in one range query; scattered ones by id."""
        select = f"SELECT rowid, {', '.join(quote_identifier(c) for c in columns)} FROM {quote_identifier(table)}"
        if rowids[-1] - rowids[0] < 4 * len(rowids):
            yield from self.conn.execute(f"{select} WHERE rowid BETWEEN ? AND ?", (rowids[0], rowids[-1]))
            return
        for chunk in _chunks(rowids):
            yield from self.conn.execute(f"{select} WHERE rowid IN ({', '.join('?' * len(chunk))})", chunk)

    def _identifying_columns(self, table: str) -> list[str]:
        """Every column any description of this table's rows reads (identity, owner, plugin, provider)."""
        if table not in self._columns:
            identities = [c for loc in CATALOGUE if loc.table == table for c in loc.identity]
            candidates = (*identities, "id", "user_id", "key", "owner_id", "plugin_id", "provider")
            self._columns[table] = [c for c in dict.fromkeys(candidates) if c in self.schema[table]]
        return self._columns[table]


def _chunks(items: Sequence[int], size: int = 500) -> list[list[int]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
