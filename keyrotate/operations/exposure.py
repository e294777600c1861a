"""Leak response: every secret a suspected key opens, as a checklist, never the values.

One read-only pass of the Scanner with the suspected key(s) records *which*
rows opened (through its ``on_token`` hook); each is then described from the
catalogue and its row's identifying columns (what it is, whose it is, where it
is revoked) and streamed on, counted per group for the checklist. Copies of the
database the rotation cannot reach, and what the data directory gives away
besides the key (``beyond``), are listed too.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyrotate.errors import KeyProblemError
from keyrotate.operations.exposure_copies import ExposedCopy, find_exposed_copies
from keyrotate.operations.exposure_groups import GroupTally, tier_of
from keyrotate.rotation.scanning import ProgressCallback, Scanner
from keyrotate.rotation.session import crypto_pool, read_session
from keyrotate.store.database import quote_identifier
from keyrotate.trek.beyond import Finding, find_beyond
from keyrotate.trek.catalogue import CATALOGUE, JsonSecrets, SecretLocation
from keyrotate.trek.formats import Keyring, Scheme
from keyrotate.trek.keys import Key

MFA_ADVICE = "the user must disable and re-enrol MFA in TREK (the TOTP seed is compromised; old codes keep working until then)"
FLUSH_EVERY = 2000  # hits described per bulk read: bounds memory whatever the number of secrets
USERNAME_CACHE = 50_000
HITS = "temp.keyrotate_exposure_hits"
_UNKNOWN_ACTION = "find out what this value is for and reissue it where it was issued"
_ARRAY_INDEX = re.compile(r"^\$\[(\d+)\]")
_FIELD = re.compile(r"^\$\.([^.\[]+)$")


@dataclass(frozen=True)
class ExposedSecret:
    what: str
    owner: str  # "instance" or "user 4 (alice)"
    where: str  # table.column, row identity, path inside JSON
    action: str  # where to revoke or reissue it
    location: str  # catalogue label, or "table.column (outside the catalogue)"
    owner_id: int | None = None
    owner_name: str | None = None
    table: str = ""
    column: str = ""
    row: dict[str, Any] = field(default_factory=dict)  # the row's identifying columns
    path: str = ""  # inside a JSON value, e.g. $[1].options.secretAccessKey
    group: str = ""  # the checklist tier (exposure_groups.TIERS)

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "owner": self.owner, "owner_id": self.owner_id, "owner_name": self.owner_name,
                "location": self.location, "table": self.table, "column": self.column, "row": self.row,
                "path": self.path, "where": self.where, "action": self.action, "group": self.group}


@dataclass(frozen=True)
class ExposureReport:
    """What one pass found. ``secrets`` is filled only when asked (small databases, tests); the
    checklist comes from ``groups``, whose size does not grow with the number of secrets."""

    database: str
    key_sources: tuple[str, ...]
    secrets: tuple[ExposedSecret, ...] = ()
    copies: tuple[ExposedCopy, ...] = ()
    plaintext: int = 0  # legacy plaintext in catalogued locations: readable without any key
    not_opened: int = 0  # tokens the suspected key does not open
    groups: GroupTally = field(default_factory=GroupTally)
    beyond: tuple[Finding, ...] = ()
    command: str = "exposure"

    @property
    def exposed(self) -> int:
        return self.groups.total


SecretSink = Callable[[ExposedSecret], None]


def find_exposure(
    db_path: Path, suspected: Sequence[Key], *, busy_timeout: float = 10.0, progress: ProgressCallback | None = None,
    check_copies: bool = True, on_secret: SecretSink | None = None, keep_secrets: bool = True,
    data_dir: Path | None = None, workers: int | None = None,
) -> ExposureReport:
    """One read-only pass: each secret the suspected keys open goes to ``on_secret`` as it is found.

    ``keep_secrets`` also keeps them all in the report (memory grows with them: not for the CLI).
    ``data_dir`` (default: the database's directory) is where ``.jwt_secret`` is looked for.
    """
    if not suspected:
        raise KeyProblemError("No suspected key was given.")
    kept: list[ExposedSecret] = []
    groups = GroupTally()

    def emit(secret: ExposedSecret) -> None:
        if keep_secrets:
            kept.append(secret)
        if on_secret is not None:
            on_secret(secret)

    with crypto_pool(db_path, suspected, workers) as pool, read_session(db_path, busy_timeout) as session:
        conn, schema = session.conn, session.info.schema
        describer = _Describer(conn, schema, groups, emit if keep_secrets or on_secret else None)
        scanner = Scanner(conn, session.info, session.resolved, Keyring(suspected), on_token=describer.on_token,
                          pool=pool)
        scanner.run("exposure", progress)
        describer.finish()
        beyond = find_beyond(conn, schema, db_path.parent if data_dir is None else data_dir)
    plaintext = sum(t.plaintext for t in scanner.tallies.values() if t.catalogued)
    copies = find_exposed_copies(db_path, suspected) if check_copies else ()
    return ExposureReport(str(db_path), tuple(k.source for k in suspected), tuple(kept), copies, plaintext,
                          describer.missed, groups, beyond)


class _Describer:
    """Turns (location, row, path) into words, reading only identifying columns.

    Hits wait in a buffer of at most FLUSH_EVERY; each flush reads their rows' identifying columns
    and owners' names in bulk, then hands every description on in the order found.
    """

    def __init__(self, conn: sqlite3.Connection, schema: dict[str, tuple[str, ...]], groups: GroupTally,
                 emit: SecretSink | None) -> None:
        self.conn = conn
        self.schema = schema
        self.groups = groups
        self.emit = emit  # None: only the group counts are wanted, which is much cheaper
        self._columns: dict[str, list[str]] = {}
        self._whole_value = frozenset(loc.label for loc in CATALOGUE if loc.whole_value)
        self._bulk: list[tuple[str, int]] = []
        self._bulk_labels: set[str] = set()
        conn.execute(f"CREATE TEMP TABLE {HITS} (label TEXT NOT NULL, rowid_ INTEGER NOT NULL)")
        self.missed = 0
        self.by_label = {loc.label: loc for loc in CATALOGUE}
        self._buffer: list[tuple[str, str, str, int, str]] = []
        self._usernames: dict[int, str | None] = {}
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}
        self._field_labels: dict[tuple[str, str], str] = {}
        if "plugin_settings_fields" in schema and "label" in schema["plugin_settings_fields"]:
            for plugin_id, key, label in conn.execute("SELECT plugin_id, field_key, label FROM plugin_settings_fields"):
                self._field_labels[(str(plugin_id), str(key))] = str(label or key)

    def on_token(self, label: str, table: str, column: str, rowid: int, path: str, index: int | None) -> None:
        if index is None:
            self.missed += 1
            return
        if label in self._whole_value:
            # The bulk of any large database (photo passphrases...): counted and described in SQL afterwards.
            self._bulk.append((label, rowid))
            if len(self._bulk) >= FLUSH_EVERY:
                self._store_bulk()
            return
        self._buffer.append((label, table, column, rowid, path))
        if len(self._buffer) >= FLUSH_EVERY:
            self.flush()

    def _store_bulk(self) -> None:
        self.conn.executemany(f"INSERT INTO {HITS} VALUES (?, ?)", self._bulk)
        self._bulk_labels.update(label for label, _ in self._bulk)
        self._bulk.clear()

    def finish(self) -> None:
        """Describe what is still buffered, then every whole-value secret straight from SQL, location by location."""
        self.flush()
        self._store_bulk()
        self.conn.execute(f"CREATE INDEX {HITS}_label ON keyrotate_exposure_hits (label, rowid_)")
        for loc in CATALOGUE:
            if loc.label in self._bulk_labels:
                self._bulk_location(loc)
        self.conn.execute(f"DROP TABLE {HITS}")

    def _bulk_location(self, loc: SecretLocation) -> None:
        table = quote_identifier(loc.table)
        extra = next((c for c in ("provider", "plugin_id") if c in self.schema[loc.table]), None)
        owner = f"t.{quote_identifier(loc.owner_column)}" if loc.owner_column else "NULL"
        named = "username" in self.schema.get("users", ()) and loc.owner_column is not None
        name = "u.username" if named else "NULL"
        join = f" LEFT JOIN users u ON u.id = {owner}" if named else ""
        detail = f"t.{quote_identifier(extra)}" if extra else "NULL"
        source = f"FROM {HITS} h JOIN {table} t ON t.rowid = h.rowid_{join} WHERE h.label = ?"
        action = MFA_ADVICE if loc.scheme is Scheme.MFA else loc.revoke_hint
        groups = self.conn.execute(
            f"SELECT {owner}, {name}, {detail}, count(*) {source} GROUP BY 1, 2, 3", (loc.label,))
        for owner_id, username, value, count in groups:
            owner_id = owner_id if isinstance(owner_id, int) else None
            what = self._what(loc, {str(extra): value}, 0, "")
            self.groups.add(tier_of(loc.table, loc.column, owner_id, True), owner_id, _owner(owner_id, username),
                            what, action, count)
        if self.emit is None:
            return
        identity = [c for c in self._identifying_columns(loc.table) if c in loc.identity]
        select = ", ".join(f"t.{quote_identifier(c)}" for c in identity) or "NULL"
        rows = self.conn.execute(
            f"SELECT h.rowid_, {owner}, {name}, {detail}, {select} {source} ORDER BY h.rowid_", (loc.label,))
        # Hundreds of thousands of rows go through here: everything that is the same for the location is
        # worked out once, and descriptions are reused per provider / plugin.
        label, base, emit = loc.label, f"{loc.table}.{loc.column} (", self.emit
        tiers = {owner_id is None: tier_of(loc.table, loc.column, owner_id, True)[1] for owner_id in (None, 0)}
        whats: dict[Any, str] = {}
        for rowid, owner_id, username, value, *ident_values in rows:
            owner_id = owner_id if isinstance(owner_id, int) else None
            if value not in whats:
                whats[value] = self._what(loc, {str(extra): value}, rowid, "")
            what = whats[value]
            ident = dict(zip(identity, ident_values, strict=True)) if identity else {"rowid": rowid}
            where = base + ", ".join(f"{k}={v}" for k, v in ident.items()) + ")"
            emit(ExposedSecret(what, _owner(owner_id, username), where, action, label, owner_id,
                               None if username is None else str(username), loc.table, loc.column, ident, "",
                               tiers[owner_id is None]))

    def flush(self) -> None:
        self._rows.clear()
        if len(self._usernames) > USERNAME_CACHE:
            self._usernames.clear()
        self.load(self._buffer)
        add, emit = self.groups.add, self.emit
        for label, table, column, rowid, path in self._buffer:
            loc = self.by_label.get(label)
            row = self._rows.get((table, rowid), {})
            owner_column = loc.owner_column if loc else ("user_id" if "user_id" in row else None)
            owner_id = row.get(owner_column) if owner_column else None
            owner_id = owner_id if isinstance(owner_id, int) else None
            name = self._usernames.get(owner_id) if owner_id is not None else None
            owner = _owner(owner_id, name)
            tier = tier_of(table, column, owner_id, loc is not None)
            if loc is None:
                what, action = f"unknown secret found outside the catalogue in {table}.{column}", _UNKNOWN_ACTION
            else:
                what = self._what(loc, row, rowid, path)
                action = MFA_ADVICE if loc.scheme is Scheme.MFA else loc.revoke_hint
            add(tier, owner_id, owner, what, action)
            if emit is not None:
                emit(self._secret(loc, label, table, column, rowid, path, row, (owner_id, name, owner),
                                  (what, action, tier[1])))
        self._buffer.clear()

    def _secret(self, loc: SecretLocation | None, label: str, table: str, column: str, rowid: int, path: str,
                row: dict[str, Any], whose: tuple[int | None, str | None, str],
                words: tuple[str, str, str]) -> ExposedSecret:
        identity = loc.identity if loc else tuple(c for c in ("id", "user_id", "key") if c in self.schema[table])
        ident = {c: row.get(c) for c in identity} or {"rowid": rowid}
        owner_id, name, owner = whose
        what, action, group = words
        where = f"{table}.{column} (" + ", ".join(f"{k}={v}" for k, v in ident.items()) + ")"
        where += f" {path}" if path else ""
        return ExposedSecret(what, owner, where, action, label, owner_id, name, table, column, ident, path, group)

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
        if "username" in self.schema.get("users", ()):
            owners.difference_update(self._usernames)
            for chunk in _chunks(sorted(owners)):
                found = self.conn.execute(
                    f"SELECT id, username FROM users WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
                self._usernames.update((uid, str(name) if name is not None else None) for uid, name in found)
            self._usernames.update((uid, None) for uid in owners if uid not in self._usernames)

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


def _owner(owner_id: int | None, name: object) -> str:
    return "instance" if owner_id is None else f"user {owner_id}" + (f" ({name})" if name else "")


def _chunks(items: Sequence[int], size: int = 500) -> list[list[int]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
