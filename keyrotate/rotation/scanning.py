"""Finding every encrypted value in a database and deciding what each one is.

The unit of work is a *target*: a catalogued location, or one table's worth of
"anything else that holds ``enc:v1:``" (discovery). Targets are read in rowid
order in bounded batches, so memory stays flat however large the table is.
Each value is classified by which key of a :class:`Keyring` opens it; when a
new key is given the value is also re-encrypted and checked on the spot.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from hashlib import blake2b
from os import urandom
from pathlib import Path
from typing import Any

from keyrotate.errors import VerificationError
from keyrotate.rotation.batches import NOT_OPENED, BatchResult, BatchSpec, process_batch, rewrite_failed
from keyrotate.rotation.workers import CryptoPool, PendingBatch
from keyrotate.store.database import InThread, connect, quote_identifier
from keyrotate.trek.catalogue import NOT_SECRETS, JsonSecrets, Presence, ResolvedLocation, SecretLocation
from keyrotate.trek.formats import (
    API_PREFIX,
    EMBEDDED_TOKEN,
    UNOPENED,
    Cipher,
    Keyring,
    Scheme,
    is_well_formed_token,
)
from keyrotate.trek.schema import DatabaseInfo

BATCH_ROWS = 2000
LOOKALIKE = "looks like a token but opens under none of the keys; left as it is"
NOT_OPENED_OUTSIDE = "a well-formed TREK ciphertext found outside the catalogue that opens under none of the keys"
FAILURE_DETAIL_LIMIT = 200  # failures listed one by one; beyond that only counted
JsonPath = tuple[str | int, ...]


class TargetKind(enum.Enum):
    WHOLE = "whole value"  # the column value is the token
    JSON = "json fields"  # catalogued fields inside a JSON value
    DISCOVERY = "discovery"  # enc:v1: found outside the catalogue


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    table: str
    label: str
    columns: tuple[str, ...]
    location: SecretLocation | None = None
    # discovery: per column, a SQL condition for rows the catalogue already covers
    exclusions: tuple[str, ...] = ()


@dataclass
class FailedValue:
    """A value that opens under none of the keys. Holds a row id, never the value."""

    table: str
    column: str
    rowid: int
    path: str
    reason: str


@dataclass
class Tally:
    """Running counts for one target (or one catalogued location)."""

    label: str
    table: str
    column: str
    catalogued: bool
    opened_by: list[int]
    plaintext: int = 0
    empty: int = 0
    unopened: int = 0  # catalogued: blocks a rotation; discovery: a look-alike, left alone
    rewritten: int = 0
    encrypted_plaintext: int = 0
    encryptable_plaintext: int = 0
    failures: list[FailedValue] = field(default_factory=list)

    def fail(self, failure: FailedValue) -> None:
        self.unopened += 1
        if len(self.failures) < FAILURE_DETAIL_LIMIT:
            self.failures.append(failure)


class Fingerprint:
    """An order-independent digest of (where, plaintext) pairs.

    Lets the post-commit check prove that every plaintext came back unchanged
    without holding any plaintext in memory. Keyed with a per-run random key,
    so the digest says nothing about the secrets. Whole-value locations add one
    digest per batch of rows (:class:`keyrotate.rotation.batches.BatchResult`), JSON
    fields and discovered tokens one per value.
    """

    def __init__(self, salt: bytes) -> None:
        self.salt = salt
        self.value = 0
        self.count = 0

    def add(self, where: str, plaintext: bytes) -> None:
        digest = blake2b(where.encode() + b"\x00" + plaintext, key=self.salt, digest_size=16).digest()
        self.value ^= int.from_bytes(digest, "big")
        self.count += 1


@dataclass
class Rewrite:
    """What a pass does besides classifying: re-encrypt for ``new_index``."""

    new_index: int
    cipher: Cipher  # the new key, api scheme: what JSON fields and stray tokens are re-encrypted with
    encrypt_plaintext: bool


ProgressCallback = Callable[[str, str, int, int | None], None]  # phase, label, advanced, total
# label, table, column, rowid, path inside the value, index of the key that opened it (None: no key)
TokenCallback = Callable[[str, str, str, int, str, int | None], None]


class DiscoverySearch:
    """The full-table scans for stray tokens, run in a thread on a connection of their own.

    Only for a rotation of a WAL database, started once the write lock is held:
    this connection's snapshot is then the database as the rotation found it
    (no other writer can commit, and the rotation's own writes stay invisible
    until its commit). Those writes touch only catalogued cells, which the
    search excludes, so it finds exactly the rows the rotation's own scan would.
    SQLite scans without holding Python's lock, so the search overlaps the crypto.
    It hands over row ids only; the rotation reads and rewrites the rows itself.
    """

    def __init__(self, path: Path, queries: dict[str, str]) -> None:
        self._path = path
        self._queries = queries
        self._found = InThread(self._search, "keyrotate-discovery")

    def _search(self) -> dict[str, list[int]]:
        with closing(connect(self._path)) as conn:  # reads only
            conn.execute("BEGIN")  # one snapshot for every table
            found = {table: [row[0] for row in conn.execute(sql)] for table, sql in self._queries.items()}
            conn.execute("ROLLBACK")
        return found

    def rowids(self, table: str) -> list[int]:
        return self._found.result().get(table, [])


class Scanner:
    """Walks every target of a database with one keyring.

    Whole-value targets (nearly every secret) go through :func:`process_batch`,
    on ``pool`` when one is given: batches are read here, handed to the pool a
    few at a time and their updates written here, in the order they were read.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        info: DatabaseInfo,
        resolved: Sequence[ResolvedLocation],
        keyring: Keyring,
        *,
        fingerprint: Fingerprint | None = None,
        rewrite: Rewrite | None = None,
        on_token: TokenCallback | None = None,
        pool: CryptoPool | None = None,
        before_first_write: Callable[[], None] | None = None,
        discovery_tables: Collection[str] | None = None,
        count_empty: bool = True,
        settled_key: int | None = None,
    ) -> None:
        self.conn = conn
        self.on_token = on_token
        self.info = info
        self.resolved = resolved
        self.keyring = keyring
        self.fingerprint = fingerprint
        self.rewrite = rewrite
        self.pool = pool
        self.tallies: dict[str, Tally] = {}
        self._before_first_write = before_first_write
        self._discovery_tables = discovery_tables  # None: look for stray tokens in every table
        self._discovery_search: DiscoverySearch | None = None  # see search_in_background()
        self._count_empty_values = count_empty
        # The key values should be under once this pass is done: the new key when rotating, else the first.
        self._settled = settled_key if settled_key is not None else rewrite.new_index if rewrite is not None else 0
        # The pool's keyring when there is one: a batch names its keys by their place in it.
        self._batch_keyring = pool.keyring if pool is not None else keyring
        self._key_order = tuple(self._batch_keyring.index_of(key) for key in keyring.keys)
        self._read_token = keyring.reader(Scheme.API)
        self._pending: deque[tuple[Target, PendingBatch]] = deque()
        self._empties: dict[str, int] | None = None
        self._plugin_fields = self._load_plugin_fields()

    # -- planning ---------------------------------------------------------

    def targets(self) -> list[Target]:
        active = [r.location for r in self.resolved if r.presence is Presence.ACTIVE]
        targets: list[Target] = []
        for loc in active:
            kind = TargetKind.WHOLE if loc.whole_value else TargetKind.JSON
            targets.append(Target(kind, loc.table, loc.label, (loc.column,), loc))
        for table, columns in self.info.schema.items():
            if table in self.info.without_rowid:
                continue
            if self._discovery_tables is not None and table not in self._discovery_tables:
                continue
            excluded: list[str] = []
            scanned: list[str] = []
            for column in columns:
                if (table, column) in NOT_SECRETS:
                    continue
                covering = [loc for loc in active if loc.table == table and loc.column == column]
                if any(loc.setting_key is None for loc in covering):
                    continue  # the whole column is catalogued
                scanned.append(column)
                excluded.append(_covered_rows(covering))
            if scanned:
                targets.append(
                    Target(TargetKind.DISCOVERY, table, f"{table} (outside the catalogue)", tuple(scanned),
                           exclusions=tuple(excluded))
                )
        return targets

    def _load_plugin_fields(self) -> dict[tuple[str, str], frozenset[str]]:
        if "plugin_settings_fields" not in self.info.schema:
            return {}
        fields: dict[tuple[str, str], set[str]] = {}
        rows = self.conn.execute(
            "SELECT plugin_id, field_key, scope FROM plugin_settings_fields WHERE secret = 1"
        )
        for plugin_id, field_key, scope in rows:
            fields.setdefault((str(plugin_id), str(scope)), set()).add(str(field_key))
        return {k: frozenset(v) for k, v in fields.items()}

    # -- the pass ---------------------------------------------------------

    def run(self, phase: str, progress: ProgressCallback | None = None) -> dict[str, Tally]:
        try:
            for target in self.targets():
                self.run_target(target, phase, progress)
            self._collect(wait=True)
            self._check_unrewritable()
        finally:
            self._pending.clear()
        return self.tallies

    def run_target(self, target: Target, phase: str, progress: ProgressCallback | None) -> None:
        if target.kind is TargetKind.WHOLE and self._count_empty_values:
            self._count_empty(target)
        total = self._count(target) if progress else None
        if progress:
            progress(phase, target.label, 0, total)
        spec = self._batch_spec(target) if target.kind is TargetKind.WHOLE else None
        for batch in self._batches(target):
            if spec is not None:
                self._submit(target, spec, batch)
            else:
                updates = self._process_batch(target, batch)
                if updates:
                    self._write(target, updates)
            if progress:
                progress(phase, target.label, len(batch), total)

    def _batch_spec(self, target: Target) -> BatchSpec:
        loc = target.location
        assert loc is not None
        rw = self.rewrite
        return BatchSpec(
            loc.label, loc.table, loc.column, loc.scheme, self._key_order,
            new_index=rw.new_index if rw is not None else None,
            encrypt_plaintext=rw.encrypt_plaintext if rw is not None else False,
            fingerprint_salt=self.fingerprint.salt if self.fingerprint is not None else None,
            report_tokens=self.on_token is not None,
        )

    def _submit(self, target: Target, spec: BatchSpec, batch: list[tuple[Any, ...]]) -> None:
        """Hand the batch to an idle worker, or do it here while the workers are busy."""
        pool = self.pool
        if pool is not None:
            self._collect(wait=False)
            handed = pool.try_submit(spec, batch)
            if handed is not None:
                self._pending.append((target, handed))
                return
        self._merge(target, process_batch(self._batch_keyring, spec, batch))

    def _collect(self, *, wait: bool) -> None:
        """Merge finished worker results, oldest first (all of them when ``wait``)."""
        pending = self._pending
        while pending and (wait or pending[0][1].ready()):
            target, handle = pending.popleft()
            self._merge(target, handle.get())

    def _merge(self, target: Target, result: BatchResult) -> None:
        loc = target.location
        assert loc is not None
        tally = self.tally(loc.label, loc.table, loc.column, True)
        for index, count in enumerate(result.opened_by):
            tally.opened_by[index] += count
        tally.plaintext += result.plaintext
        tally.encryptable_plaintext += result.encryptable_plaintext
        tally.encrypted_plaintext += result.encrypted_plaintext
        tally.rewritten += result.rewritten
        if self.on_token is not None:
            for rowid, index in result.tokens:
                self.on_token(loc.label, loc.table, loc.column, rowid, "", None if index < 0 else index)
        for rowid in result.unopened:
            tally.fail(FailedValue(loc.table, loc.column, rowid, "", NOT_OPENED))
        if self.fingerprint is not None:
            self.fingerprint.value ^= result.fingerprint
            self.fingerprint.count += result.fingerprinted
        if result.updates:
            self._write(target, result.updates)

    def _unopenable(self, table: str, column: str, why: str = "opens under no key") -> Tally:
        """Where tokens outside the catalogue that cannot be left as they are get counted.

        Counted as catalogued: they block a rotation (exit 8) and fail verify like any catalogued secret.
        """
        return self.tally(f"{table}.{column} (outside the catalogue, {why})", table, column, True)

    def tally(self, label: str, table: str, column: str, catalogued: bool) -> Tally:
        tally = self.tallies.get(label)
        if tally is None:
            tally = Tally(label, table, column, catalogued, [0] * len(self.keyring))
            self.tallies[label] = tally
        return tally

    def _where(self, target: Target) -> tuple[str, tuple[Any, ...]]:
        if target.kind is TargetKind.DISCOVERY:
            conds = [_discovery_condition(c, ex) for c, ex in zip(target.columns, target.exclusions, strict=True)]
            return "(" + " OR ".join(conds) + ")", ()
        loc = target.location
        assert loc is not None
        col = quote_identifier(loc.column)
        where = f"{col} IS NOT NULL AND {col} != ''"
        params: tuple[Any, ...] = ()
        if loc.setting_key is not None:
            where += f" AND {quote_identifier(loc.key_column)} = ?"
            params = (loc.setting_key,)
        return where, params

    def _count_empty(self, target: Target) -> None:
        """NULL and '' both mean "not set" to TREK; counted, never fetched."""
        loc = target.location
        assert loc is not None
        if self._empties is None:
            self._empties = self._count_all_empty()
        self.tally(loc.label, loc.table, loc.column, True).empty += self._empties.get(loc.label, 0)

    def _count_all_empty(self) -> dict[str, int]:
        """Empty values of every whole-value location: one scan per table, not one per location."""
        by_table: dict[str, list[SecretLocation]] = {}
        for entry in self.resolved:
            if entry.presence is Presence.ACTIVE and entry.location.whole_value:
                by_table.setdefault(entry.location.table, []).append(entry.location)
        empties: dict[str, int] = {}
        for table, locations in by_table.items():
            columns = [loc for loc in locations if loc.setting_key is None]
            if columns:
                sums = ", ".join(f"sum({_empty(loc.column)})" for loc in columns)
                row = self.conn.execute(f"SELECT {sums} FROM {quote_identifier(table)}").fetchone()
                empties.update((loc.label, int(n or 0)) for loc, n in zip(columns, row, strict=True))
            keyed = [loc for loc in locations if loc.setting_key is not None]
            for column in sorted({loc.column for loc in keyed}):
                labels = {loc.setting_key: loc.label for loc in keyed if loc.column == column}
                placeholders = ", ".join("?" * len(labels))
                rows = self.conn.execute(
                    f'SELECT "key", count(*) FROM {quote_identifier(table)} '
                    f'WHERE {_empty(column)} AND "key" IN ({placeholders}) GROUP BY "key"', tuple(labels),
                )
                empties.update((labels[key], int(n)) for key, n in rows if key in labels)
        return empties

    def _count(self, target: Target) -> int:
        where, params = self._where(target)
        row = self.conn.execute(
            f"SELECT count(*) FROM {quote_identifier(target.table)} WHERE {where}", params
        ).fetchone()
        return int(row[0])

    def _select_columns(self, target: Target) -> list[str]:
        if target.kind is TargetKind.DISCOVERY:
            # NULL for every cell the catalogue covers or that holds no token.
            return [f"CASE WHEN {_discovery_condition(c, ex)} THEN {quote_identifier(c)} END"
                    for c, ex in zip(target.columns, target.exclusions, strict=True)]
        cols = [quote_identifier(c) for c in target.columns]
        loc = target.location
        if loc is not None and loc.json_secrets is JsonSecrets.PLUGIN_INSTANCE:
            cols.append('"id"')
        elif loc is not None and loc.json_secrets is JsonSecrets.PLUGIN_USER:
            cols.append('"plugin_id"')
        return cols

    def search_in_background(self, path: Path) -> None:
        """Find the rows holding stray tokens on another connection while this scanner does the rest.

        Only sound where :class:`DiscoverySearch` says so: a WAL database under this scanner's write lock.
        """
        self._discovery_search = DiscoverySearch(path, self._discovery_queries())

    def _discovery_queries(self) -> dict[str, str]:
        queries = {}
        for target in self.targets():
            if target.kind is TargetKind.DISCOVERY:
                where, _ = self._where(target)
                queries[target.table] = f"SELECT rowid FROM {quote_identifier(target.table)} WHERE {where} ORDER BY rowid"
        return queries

    def _batches(self, target: Target) -> Iterator[list[tuple[Any, ...]]]:
        if target.kind is TargetKind.DISCOVERY and self._discovery_search is not None:
            yield from self._rows_by_id(target, self._discovery_search.rowids(target.table))
            return
        where, params = self._where(target)
        sql = (
            f"SELECT rowid, {', '.join(self._select_columns(target))} FROM {quote_identifier(target.table)} "
            f"WHERE rowid > ? AND {where} ORDER BY rowid LIMIT {BATCH_ROWS}"
        )
        last = -(2**63)
        while True:
            batch = self.conn.execute(sql, (last, *params)).fetchall()
            if not batch:
                return
            yield batch
            last = batch[-1][0]

    def _rows_by_id(self, target: Target, rowids: Sequence[int]) -> Iterator[list[tuple[Any, ...]]]:
        columns = ", ".join(self._select_columns(target))
        for start in range(0, len(rowids), BATCH_ROWS):
            chunk = rowids[start : start + BATCH_ROWS]
            sql = (f"SELECT rowid, {columns} FROM {quote_identifier(target.table)} "
                   f"WHERE rowid IN ({', '.join('?' * len(chunk))}) ORDER BY rowid")
            yield self.conn.execute(sql, tuple(chunk)).fetchall()

    def _write(self, target: Target, updates: list[tuple[str, int]] | list[tuple[str, int, str]]) -> None:
        if self._before_first_write is not None:
            before, self._before_first_write = self._before_first_write, None
            before()
        table = quote_identifier(target.table)
        if target.kind is TargetKind.DISCOVERY:
            # (new_text, rowid, column): group by column, one statement per column.
            by_column: dict[str, list[tuple[str, int]]] = {}
            for new_text, rowid, column in updates:  # type: ignore[misc]
                by_column.setdefault(column, []).append((new_text, rowid))
            for column, pairs in by_column.items():
                self.conn.executemany(f"UPDATE {table} SET {quote_identifier(column)} = ? WHERE rowid = ?", pairs)
        else:
            column = quote_identifier(target.columns[0])
            self.conn.executemany(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", updates)

    def _check_unrewritable(self) -> None:
        """``enc:v1:`` where discovery cannot rewrite it: WITHOUT ROWID tables and BLOB values.

        A token there under the settled key is fine. One under another key, or well formed and opening
        under none, is a failure that blocks the rotation and fails verify: never left silently.
        """
        for table, columns in self.info.schema.items():
            if self._discovery_tables is not None and table not in self._discovery_tables:
                continue
            no_rowid = table in self.info.without_rowid
            scanned = [c for c in columns if (table, c) not in NOT_SECRETS]
            if not scanned:
                continue
            if no_rowid:
                conds = [f"instr(CAST({quote_identifier(c)} AS TEXT), 'enc:v1:') > 0" for c in scanned]
                keys = [str(r[1]) for r in self.conn.execute(f"PRAGMA table_info({quote_identifier(table)})") if r[5]]
                where_text = "in a WITHOUT ROWID table, which keyrotate cannot rewrite"
            else:
                conds = [f"(typeof({quote_identifier(c)}) = 'blob' AND instr({quote_identifier(c)}, X'656e633a76313a') > 0)"
                         for c in scanned]
                keys = ["rowid"]
                where_text = "stored as BLOB, which keyrotate cannot rewrite"
            select = ", ".join([quote_identifier(k) if k != "rowid" else "rowid" for k in keys]
                               + [quote_identifier(c) for c in scanned])
            sql = f"SELECT {select} FROM {quote_identifier(table)} WHERE {' OR '.join(conds)}"
            for row in self.conn.execute(sql):
                ident, values = row[: len(keys)], row[len(keys) :]
                rowid = 0 if no_rowid else int(ident[0])
                where = "" if not no_rowid else "(" + ", ".join(f"{k}={v}" for k, v in zip(keys, ident, strict=True)) + ") "
                for column, value in zip(scanned, values, strict=True):
                    self._unrewritable_value(table, column, rowid, where, value, where_text)

    def _unrewritable_value(self, table: str, column: str, rowid: int, where: str, value: Any, why: str) -> None:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value if isinstance(value, str) else ""
        for match in EMBEDDED_TOKEN.finditer(text):
            index, _ = self._read_token(match.group())
            if index == self._settled:
                continue
            if index == UNOPENED and not is_well_formed_token(match.group()):
                continue  # a note that mentions enc:v1:
            state = "opens under none of the keys" if index == UNOPENED else "opens under another key than it must end under"
            self._unopenable(table, column, "cannot be rewritten").fail(
                FailedValue(table, column, rowid, f"{where}@{match.start()}", f"a TREK ciphertext {why}; it {state}"))

    # -- classifying values -----------------------------------------------

    def _process_batch(self, target: Target, batch: list[tuple[Any, ...]]) -> list[Any]:
        if target.kind is TargetKind.JSON:
            return self._json_batch(target, batch)
        return self._discovery_batch(target, batch)

    def _plaintext(
        self, tally: Tally, loc: SecretLocation, rowid: int, path: str, value: str, *, can_rewrite: bool = True
    ) -> str | None:
        """Legacy plaintext in an api location; encrypted only when asked."""
        tally.plaintext += 1
        tally.encryptable_plaintext += can_rewrite
        rw = self.rewrite
        if rw is None or not rw.encrypt_plaintext or not can_rewrite:
            return None
        plaintext = value.encode("utf-8")
        if self.fingerprint is not None:
            self.fingerprint.add(f"{loc.label}\x00{rowid}\x00{path}", plaintext)
        new = rw.cipher.seal_checked(plaintext)
        if new is None:
            raise rewrite_failed(loc.table, loc.column, rowid)
        tally.encrypted_plaintext += 1
        return new

    def _token(
        self, tally: Tally, table: str, column: str, rowid: int, path: str, stored: str, *, blocking: bool
    ) -> str | None:
        """Classify one api token inside a JSON value or a text; return its replacement when it must be rewritten.

        (mfa values only ever fill whole columns, which :func:`process_batch` handles.)
        """
        index, plaintext = self._read_token(stored)
        if self.on_token is not None:
            self.on_token(tally.label, table, column, rowid, path, None if index < 0 else index)
        if index < 0:  # UNOPENED: stored starts with the prefix, so it is never PLAINTEXT
            if blocking:
                tally.fail(FailedValue(table, column, rowid, path, NOT_OPENED))
            elif is_well_formed_token(stored):
                # Almost surely a secret under a lost key: it blocks like a catalogued one.
                self._unopenable(table, column).fail(FailedValue(table, column, rowid, path, NOT_OPENED_OUTSIDE))
            else:
                tally.fail(FailedValue(table, column, rowid, path, LOOKALIKE))
            return None
        tally.opened_by[index] += 1
        if self.fingerprint is not None:
            self.fingerprint.add(f"{tally.label}\x00{rowid}\x00{path}", plaintext)
        rw = self.rewrite
        if rw is None or index == rw.new_index:
            return None
        new = rw.cipher.seal_checked(plaintext)
        if new is None:
            raise rewrite_failed(table, column, rowid)
        tally.rewritten += 1
        return new

    def _json_batch(self, target: Target, batch: list[tuple[Any, ...]]) -> list[tuple[str, int]]:
        loc = target.location
        assert loc is not None
        tally = self.tally(loc.label, loc.table, loc.column, True)
        outside = self.tally(_outside_label(loc.table, loc.column), loc.table, loc.column, False)
        updates: list[tuple[str, int]] = []
        for row in batch:
            rowid, value = row[0], row[1]
            if not isinstance(value, str) or value.strip() in ("", "{}", "[]"):
                tally.empty += 1
                continue
            try:
                document = json.loads(value)
            except (ValueError, RecursionError):
                # Not JSON (or nested too deep to be TREK's): its tokens are found like any stray token.
                new = self._embedded(outside, loc.table, loc.column, rowid, value)
                if new is not None:
                    updates.append((new, rowid))
                continue
            secret_paths = self._secret_paths(loc, document, row)
            replacements: dict[str, str] = {}
            strings = list(_json_strings(document))
            for path, item in strings:
                if path in secret_paths:
                    if item == "":
                        tally.empty += 1
                    elif not item.startswith(API_PREFIX):
                        quoted = json.dumps(item, ensure_ascii=False)
                        # Swap it only where the text says it exactly once.
                        new_item = self._plaintext(tally, loc, rowid, _path_text(path), item,
                                                   can_rewrite=value.count(quoted) == 1)
                        if new_item is not None:
                            replacements[quoted] = new_item
                    else:
                        new_item = self._token(tally, loc.table, loc.column, rowid, _path_text(path), item,
                                               blocking=True)
                        if new_item is not None:
                            replacements[item] = new_item
                elif item.startswith(API_PREFIX):
                    new_item = self._token(outside, loc.table, loc.column, rowid, _path_text(path), item,
                                           blocking=False)
                    if new_item is not None:
                        replacements[item] = new_item
            tally.empty += len(secret_paths - {p for p, _ in strings})  # secret fields not there at all
            if replacements:
                updates.append((_replace_json_strings(value, replacements, loc.label, rowid), rowid))
        return updates

    def _secret_paths(self, loc: SecretLocation, document: Any, row: tuple[Any, ...]) -> set[JsonPath]:
        if loc.json_secrets is JsonSecrets.S3_BACKENDS:
            if not isinstance(document, list):
                return set()
            return {
                (i, "options", "secretAccessKey")
                for i, backend in enumerate(document)
                if isinstance(backend, dict) and backend.get("type") == "s3"
            }
        if loc.json_secrets is JsonSecrets.FIELDS:
            return {(name,) for name in loc.json_fields}
        scope = "instance" if loc.json_secrets is JsonSecrets.PLUGIN_INSTANCE else "user"
        return {(name,) for name in self._plugin_fields.get((str(row[2]), scope), frozenset())}

    def _discovery_batch(self, target: Target, batch: list[tuple[Any, ...]]) -> list[tuple[str, int, str]]:
        updates: list[tuple[str, int, str]] = []
        for row in batch:
            rowid = row[0]
            for column, value in zip(target.columns, row[1:], strict=True):
                if value is None:
                    continue
                tally = self.tally(_outside_label(target.table, column), target.table, column, False)
                new = self._embedded(tally, target.table, column, rowid, value)
                if new is not None:
                    updates.append((new, rowid, column))
        return updates

    def _embedded(self, tally: Tally, table: str, column: str, rowid: int, value: str) -> str | None:
        """Tokens anywhere in a text: the whole value, JSON strings, or runs in free text."""
        if value.startswith(API_PREFIX) and EMBEDDED_TOKEN.fullmatch(value.strip()):
            return self._token(tally, table, column, rowid, "", value, blocking=False)
        stripped = value.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                document = json.loads(value)
            except (ValueError, RecursionError):  # a note like "[[[[..." is text, not a crash
                pass
            else:
                replacements: dict[str, str] = {}
                for path, item in _json_strings(document):
                    if item.startswith(API_PREFIX):
                        new_item = self._token(tally, table, column, rowid, _path_text(path), item, blocking=False)
                        if new_item is not None:
                            replacements[item] = new_item
                if not replacements:
                    return None
                return _replace_json_strings(value, replacements, f"{table}.{column}", rowid)
        pieces: list[str] = []
        last = 0
        changed = False
        for match in EMBEDDED_TOKEN.finditer(value):
            new_item = self._token(tally, table, column, rowid, f"@{match.start()}", match.group(), blocking=False)
            pieces.append(value[last : match.start()])
            pieces.append(new_item if new_item is not None else match.group())
            changed = changed or new_item is not None
            last = match.end()
        pieces.append(value[last:])
        return "".join(pieces) if changed else None


def _covered_rows(covering: Sequence[SecretLocation]) -> str:
    """SQL condition for the rows of a column that catalogued key-value locations already cover."""
    by_column: dict[str, list[str]] = {}
    for loc in covering:
        if loc.setting_key is not None:
            by_column.setdefault(loc.key_column, []).append(_sql_literal(loc.setting_key))
    conditions = [f"{quote_identifier(c)} IN ({', '.join(sorted(keys))})" for c, keys in sorted(by_column.items())]
    return " OR ".join(conditions) or "0"


def _empty(column: str) -> str:
    col = quote_identifier(column)
    return f"({col} IS NULL OR {col} = '')"


def _discovery_condition(column: str, exclusion: str) -> str:
    col = quote_identifier(column)
    return f"(typeof({col}) = 'text' AND instr({col}, 'enc:v1:') > 0 AND NOT ({exclusion}))"


def _outside_label(table: str, column: str) -> str:
    return f"{table}.{column} (outside the catalogue)"


def _json_strings(document: Any, path: JsonPath = ()) -> Iterator[tuple[JsonPath, str]]:
    # With a stack, not recursion: json.loads accepts nesting deep enough to exhaust Python's.
    stack: list[tuple[JsonPath, Any]] = [(path, document)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            stack.extend(reversed([((*where, name), child) for name, child in item.items()]))
        elif isinstance(item, list):
            stack.extend(reversed([((*where, index), child) for index, child in enumerate(item)]))


def _path_text(path: JsonPath) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _replace_json_strings(text: str, replacements: dict[str, str], label: str, rowid: int) -> str:
    """Swap string values inside raw JSON text, leaving every other byte as it was.

    Re-serialising would reformat numbers and escapes TREK wrote; an exact
    textual swap cannot. Keys of ``replacements`` are either a bare token (its
    text appears verbatim between quotes) or an already-quoted JSON string.
    """
    for old, new in replacements.items():
        quoted_old = old if old.startswith('"') else f'"{old}"'
        if quoted_old not in text:
            raise VerificationError(
                f"A value inside the JSON in {label} row {rowid} is written with escapes keyrotate will not rewrite; "
                "nothing was committed."
            )
        text = text.replace(quoted_old, f'"{new}"')
    return text


def new_fingerprint() -> Fingerprint:
    return Fingerprint(urandom(32))


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
