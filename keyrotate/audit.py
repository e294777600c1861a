"""Plaintext audit: secrets TREK keeps unencrypted, by design or as legacy leftovers.

Three kinds of finding, each with a count and what to do, never a value:
- a catalogued location this TREK version reads as plaintext (3.0.15's
  ``users.unsplash_api_key``): it must stay plaintext until TREK is upgraded;
- a catalogued, encrypted location still holding legacy plaintext: fixed by
  ``keyrotate rotate ... --encrypt-plaintext``;
- a column, or a settings key, whose name looks like a secret but that TREK
  does not encrypt at all (outside the catalogue).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyrotate.catalogue import CATALOGUE, NOT_SECRETS, Presence, resolve_catalogue
from keyrotate.database import quote_identifier, translate_error
from keyrotate.engine import open_database
from keyrotate.report import SCHEMA_VERSION
from keyrotate.scanning import Keyring, Scanner

# Names that say "secret"; hashes, expiry times, ids and flags about secrets say nothing.
_SECRET_NAME = re.compile(r"(api_?key|secret|password|passwd|passphrase|token|_pass|_sid|access_?key)$", re.I)
_NOT_SECRET_NAME = re.compile(r"(_hash|_expires_at|_id|_prefix|_version|^must_change_password)$", re.I)
ENCRYPT_COMMAND = "keyrotate rotate --data-dir DIR --new-key-file NEW.key --encrypt-plaintext"


@dataclass(frozen=True)
class AuditFinding:
    kind: str  # "plaintext in this TREK version" | "legacy plaintext" | "not encrypted by TREK"
    location: str
    what: str
    values: int  # non-empty plaintext values found
    fix: str


@dataclass(frozen=True)
class AuditReport:
    database: str
    trek_version: str
    findings: tuple[AuditFinding, ...]
    command: str = "audit"

    checklist = True
    title = "Secrets stored in plaintext"
    columns = ("location", "kind", "values", "what to do")

    @property
    def clean(self) -> bool:
        return not self.findings

    def rows(self) -> list[tuple[str, ...]]:
        return [(f"{f.location}: {f.what}", f.kind, str(f.values), f.fix) for f in self.findings]

    def notes(self) -> list[str]:
        if self.clean:
            return [f"No plaintext secrets found in {self.database} (TREK {self.trek_version})."]
        total = sum(f.values for f in self.findings)
        return [f"{total} plaintext value(s) in {len(self.findings)} location(s) of {self.database} "
                f"(TREK {self.trek_version}). Anyone with a copy of the database reads them without a key."]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "command": self.command, "database": self.database,
            "trek_version": self.trek_version, "clean": self.clean,
            "findings": [f.__dict__ for f in self.findings],
        }


def audit_database(db_path: Path, *, busy_timeout: float = 10.0) -> AuditReport:
    conn, info = open_database(db_path, busy_timeout, for_writing=False)
    try:
        conn.execute("BEGIN")
        resolved = resolve_catalogue(info.schema, info.version)
        findings: list[AuditFinding] = []
        for entry in resolved:
            if entry.presence is not Presence.PLAINTEXT_IN_THIS_VERSION:
                continue
            loc = entry.location
            count = _count_plaintext(conn, loc.table, loc.column, loc.setting_key)
            if count:
                findings.append(AuditFinding(
                    "plaintext in this TREK version", loc.label, loc.what, count,
                    f"{entry.reason}. TREK {loc.encrypted_since}.x encrypts it: after upgrading, run {ENCRYPT_COMMAND}",
                ))
        # An empty keyring opens nothing, but the Scanner still counts plaintext where ciphertext belongs.
        scanner = Scanner(conn, info, resolved, Keyring(()))
        scanner.run("audit")
        by_label = {loc.label: loc for loc in CATALOGUE}
        for tally in scanner.tallies.values():
            known = by_label.get(tally.label)
            if not tally.catalogued or known is None or not tally.plaintext:
                continue
            fix = (ENCRYPT_COMMAND if tally.encryptable_plaintext == tally.plaintext else
                   f"{ENCRYPT_COMMAND} ({tally.plaintext - tally.encryptable_plaintext} value(s) it cannot rewrite "
                   "safely: re-enter those in TREK)")
            findings.append(AuditFinding("legacy plaintext", tally.label, known.what, tally.plaintext, fix))
        findings.extend(_uncatalogued(conn, info.schema))
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise translate_error(exc, db_path) from None
    finally:
        conn.close()
    return AuditReport(str(db_path), info.version.evidence, tuple(findings))


def _count_plaintext(conn: sqlite3.Connection, table: str, column: str, setting_key: str | None) -> int:
    col = quote_identifier(column)
    # Text only: a flag column such as plugin_settings_fields.secret holds 0/1, not a secret.
    where = f"typeof({col}) = 'text' AND {col} != '' AND substr({col}, 1, 7) != 'enc:v1:'"
    params: tuple[str, ...] = ()
    if setting_key is not None:
        where += ' AND "key" = ?'
        params = (setting_key,)
    row = conn.execute(f"SELECT count(*) FROM {quote_identifier(table)} WHERE {where}", params).fetchone()
    return int(row[0])


def _uncatalogued(conn: sqlite3.Connection, schema: dict[str, tuple[str, ...]]) -> list[AuditFinding]:
    covered = {(loc.table, loc.column) for loc in CATALOGUE if loc.setting_key is None}
    setting_keys = {(loc.table, loc.setting_key) for loc in CATALOGUE if loc.setting_key is not None}
    out = []
    for table, columns in schema.items():
        for column in columns:
            if (table, column) in covered or (table, column) in NOT_SECRETS:
                continue
            if not _SECRET_NAME.search(column) or _NOT_SECRET_NAME.search(column):
                continue
            count = _count_plaintext(conn, table, column, None)
            if count:
                out.append(AuditFinding(
                    "not encrypted by TREK", f"{table}.{column}", "column named like a secret", count,
                    "TREK stores this column as it is; keyrotate cannot encrypt it. Limit who can read the database "
                    "and its backups, and report it to TREK if it holds a credential",
                ))
        if {"key", "value"} <= set(columns) and table in ("settings", "app_settings"):
            rows = conn.execute(
                f"SELECT \"key\", count(*) FROM {quote_identifier(table)} WHERE typeof(value) = 'text' AND value != '' "
                "AND substr(value, 1, 7) != 'enc:v1:' GROUP BY \"key\""
            ).fetchall()
            for key, count in rows:
                if (table, key) in setting_keys or not isinstance(key, str):
                    continue
                if _SECRET_NAME.search(key) and not _NOT_SECRET_NAME.search(key):
                    out.append(AuditFinding(
                        "not encrypted by TREK", f"{table}.value[{key}]", "setting named like a secret", int(count),
                        "TREK stores this setting as it is; keyrotate cannot encrypt it. Report it to TREK if it "
                        "holds a credential",
                    ))
    return out
