"""Leak response: every secret a suspected key opens, as a checklist, never the values.

One read-only pass of the Scanner with the suspected key(s) records *which*
rows opened (through its ``on_token`` hook); each is then described from the
catalogue and its row's identifying columns: what it is, whose it is, where it
is revoked. Copies of the database the rotation cannot reach are listed too.
"""

from __future__ import annotations

import json
import re
import sqlite3
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyrotate.backups import find_backups, inspect_backup
from keyrotate.catalogue import CATALOGUE, JsonSecrets, SecretLocation, resolve_catalogue
from keyrotate.database import quote_identifier, translate_error
from keyrotate.engine import open_database
from keyrotate.errors import KeyProblemError
from keyrotate.formats import Scheme
from keyrotate.keys import Key
from keyrotate.report import SCHEMA_VERSION
from keyrotate.scanning import Keyring, ProgressCallback, Scanner

MFA_ADVICE = "the user must disable and re-enrol MFA in TREK (the TOTP seed is compromised; old codes keep working until then)"
_ARRAY_INDEX = re.compile(r"^\$\[(\d+)\]")
_FIELD = re.compile(r"^\$\.([^.\[]+)$")
# Copies of travel.db that keyrotate (and TREK's own script) leave next to it.
COPY_PATTERNS = (
    ("*.keyrotate-backup-*", "keyrotate's pre-rotation backup"),
    ("*.backup-*", "copy left by TREK's migrate-encryption script"),
)


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


@dataclass(frozen=True)
class ExposedCopy:
    path: str
    kind: str
    note: str


@dataclass(frozen=True)
class ExposureReport:
    database: str
    key_sources: tuple[str, ...]
    secrets: tuple[ExposedSecret, ...]
    copies: tuple[ExposedCopy, ...] = ()
    plaintext: int = 0  # legacy plaintext in catalogued locations: readable without any key
    not_opened: int = 0  # tokens the suspected key does not open
    command: str = "exposure"

    checklist = True
    title = "Secrets readable with the suspected key"
    columns = ("what", "owner", "where", "revoke or reissue at")

    def rows(self) -> list[tuple[str, ...]]:
        return [(s.what, s.owner, s.where, s.action) for s in self.secrets]

    def notes(self) -> list[str]:
        notes = [f"{len(self.secrets)} secret(s) open with {', '.join(self.key_sources)}. Revoke or reissue each one "
                 "where it was issued: rotating the key protects the database from now on, not what already leaked."]
        if self.not_opened:
            notes.append(f"{self.not_opened} other encrypted value(s) do not open with the suspected key.")
        if self.plaintext:
            notes.append(f"{self.plaintext} value(s) in secret locations are stored in PLAINTEXT: anyone with a copy "
                         "of the database could read them, key or not. Treat them as exposed; see `keyrotate audit`.")
        for copy in self.copies:
            notes.append(f"NOT FIXED BY ROTATING: {copy.path} ({copy.kind}): {copy.note}")
        notes.append("Copies keyrotate cannot see (off-site backups, volume snapshots, host backups) still open with "
                     "the old key: delete them, or treat every secret above as exposed for as long as they exist.")
        return notes

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "database": self.database,
            "key_sources": list(self.key_sources),
            "secrets": [
                {"what": s.what, "owner": s.owner, "owner_id": s.owner_id, "owner_name": s.owner_name,
                 "location": s.location, "table": s.table, "column": s.column, "row": s.row, "path": s.path,
                 "where": s.where, "action": s.action}
                for s in self.secrets
            ],
            "copies": [{"path": c.path, "kind": c.kind, "note": c.note} for c in self.copies],
            "totals": {"exposed": len(self.secrets), "plaintext": self.plaintext, "not_opened": self.not_opened},
        }


def find_exposure(
    db_path: Path, suspected: Sequence[Key], *, busy_timeout: float = 10.0, progress: ProgressCallback | None = None,
    check_copies: bool = True,
) -> ExposureReport:
    if not suspected:
        raise KeyProblemError("No suspected key was given.")
    hits: list[tuple[str, str, str, int, str]] = []
    missed = 0

    def on_token(label: str, table: str, column: str, rowid: int, path: str, index: int | None) -> None:
        nonlocal missed
        if index is None:
            missed += 1
        else:
            hits.append((label, table, column, rowid, path))

    conn, info = open_database(db_path, busy_timeout, for_writing=False)
    try:
        conn.execute("BEGIN")
        scanner = Scanner(conn, info, resolve_catalogue(info.schema, info.version), Keyring(suspected),
                          on_token=on_token)
        scanner.run("exposure", progress)
        describer = _Describer(conn, info.schema)
        describer.load({(hit[1], hit[3]) for hit in hits})
        secrets = sorted((describer.describe(*hit) for hit in hits), key=_order)
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise translate_error(exc, db_path) from None
    finally:
        conn.close()
    plaintext = sum(t.plaintext for t in scanner.tallies.values() if t.catalogued)
    copies = find_exposed_copies(db_path, suspected) if check_copies else ()
    return ExposureReport(str(db_path), tuple(k.source for k in suspected), tuple(secrets), copies, plaintext, missed)


def find_exposed_copies(db_path: Path, suspected: Sequence[Key]) -> tuple[ExposedCopy, ...]:
    """Copies of the database next to it and TREK's backup ZIPs, with what the suspected key opens in each."""
    out: list[ExposedCopy] = []
    seen: set[Path] = set()
    for pattern, kind in COPY_PATTERNS:
        for path in sorted(db_path.parent.glob(db_path.name + pattern[1:])):
            if path in seen or not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal", ".key")):
                continue
            seen.add(path)
            mode = stat.S_IMODE(path.stat().st_mode)
            readable = f" It is readable by other users (mode {mode:04o}): chmod 600 it now." if mode & 0o077 else ""
            key = Path(f"{path}.key")  # the old key rotate saved beside its backup
            beside = f" The old key itself is saved beside it in {key}: delete both together." if key.is_file() else ""
            out.append(ExposedCopy(str(path), kind, "opens with the old key; delete it once TREK runs fine on the new "
                                   "key, or move it somewhere safe." + readable + beside))
    for path in sorted(db_path.parent.glob(f"{db_path.name}.keyrotate-oldkey-*.key")):
        out.append(ExposedCopy(str(path), "old key saved by keyrotate (--no-backup)", "the old key itself; delete it "
                               "once nothing you keep is under the old key"))
    for zip_path in find_backups(db_path.parent):
        status = inspect_backup(zip_path, suspected)
        if status.problem:
            note = f"could not be checked ({status.problem}); assume it opens with the old key"
        else:
            opens = status.keys[0].opens
            if opens in ("none", "no secrets"):
                continue
            note = (f"the suspected key opens {opens} of its secrets (backup from {status.date}); "
                    "re-encrypt it with `keyrotate rekey-backup` or `rotate --rekey-backups`, or delete it")
        out.append(ExposedCopy(str(zip_path), "TREK backup ZIP", note))
    return tuple(out)


def _order(secret: ExposedSecret) -> tuple[int, int, str, str]:
    return (secret.owner_id is not None, secret.owner_id or 0, secret.what, secret.where)


class _Describer:
    """Turns (location, row, path) into words, reading only identifying columns."""

    def __init__(self, conn: sqlite3.Connection, schema: dict[str, tuple[str, ...]]) -> None:
        self.conn = conn
        self.schema = schema
        self.by_label = {loc.label: loc for loc in CATALOGUE}
        self._usernames: dict[int, str | None] = {}
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}
        self._field_labels: dict[tuple[str, str], str] = {}
        if "plugin_settings_fields" in schema and "label" in schema["plugin_settings_fields"]:
            for plugin_id, key, label in conn.execute("SELECT plugin_id, field_key, label FROM plugin_settings_fields"):
                self._field_labels[(str(plugin_id), str(key))] = str(label or key)

    def describe(self, label: str, table: str, column: str, rowid: int, path: str) -> ExposedSecret:
        loc = self.by_label.get(label)
        identity = loc.identity if loc else tuple(c for c in ("id", "user_id", "key") if c in self.schema[table])
        row = self._rows.get((table, rowid), {})
        ident = {c: row.get(c) for c in identity} or {"rowid": rowid}
        owner_column = loc.owner_column if loc else ("user_id" if "user_id" in row else None)
        owner_id = row.get(owner_column) if owner_column else None
        owner_id = owner_id if isinstance(owner_id, int) else None
        name = self._username(owner_id) if owner_id is not None else None
        owner = "instance" if owner_id is None else f"user {owner_id}" + (f" ({name})" if name else "")
        where = f"{table}.{column} (" + ", ".join(f"{k}={v}" for k, v in ident.items()) + ")"
        where += f" {path}" if path else ""
        if loc is None:
            what = f"unknown secret found outside the catalogue in {table}.{column}"
            action = "find out what this value is for and reissue it where it was issued"
        else:
            what, action = self._what(loc, row, rowid, path), loc.revoke_hint
        if loc is not None and loc.scheme is Scheme.MFA:
            action = MFA_ADVICE
        return ExposedSecret(what, owner, where, action, label, owner_id, name, table, column, ident, path)

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

    def load(self, rows: set[tuple[str, int]]) -> None:
        """Read the identifying columns of every (table, rowid) to describe, and their users' names, in bulk."""
        by_table: dict[str, list[int]] = {}
        for table, rowid in rows:
            by_table.setdefault(table, []).append(rowid)
        for table, rowids in by_table.items():
            columns = self._identifying_columns(table)
            if not columns:
                continue
            select = ", ".join(quote_identifier(c) for c in columns)
            for chunk in _chunks(sorted(rowids)):
                found = self.conn.execute(
                    f"SELECT rowid, {select} FROM {quote_identifier(table)} WHERE rowid IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
                for rowid, *values in found:
                    self._rows[(table, rowid)] = dict(zip(columns, values, strict=True))
        if "username" in self.schema.get("users", ()):
            owners = {v for row in self._rows.values() for c, v in row.items()
                      if c in ("id", "user_id", "owner_id") and isinstance(v, int)}
            for chunk in _chunks(sorted(owners)):
                found = self.conn.execute(
                    f"SELECT id, username FROM users WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
                self._usernames.update((uid, str(name) if name is not None else None) for uid, name in found)

    def _identifying_columns(self, table: str) -> list[str]:
        """Every column any description of this table's rows reads (identity, owner, plugin, provider)."""
        identities = [c for loc in CATALOGUE if loc.table == table for c in loc.identity]
        candidates = (*identities, "id", "user_id", "key", "owner_id", "plugin_id", "provider")
        return [c for c in dict.fromkeys(candidates) if c in self.schema[table]]

    def _username(self, user_id: int) -> str | None:
        return self._usernames.get(user_id)


def _chunks(items: Sequence[int], size: int = 500) -> list[list[int]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
