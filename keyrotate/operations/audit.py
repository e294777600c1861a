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
import shlex
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyrotate.rotation.report import SCHEMA_VERSION
from keyrotate.rotation.scanning import Scanner
from keyrotate.rotation.session import ReadSession, read_session
from keyrotate.rotation.tallies import Tally
from keyrotate.store.database import quote_identifier
from keyrotate.trek.catalogue import CATALOGUE, NOT_SECRETS, Presence, SecretLocation
from keyrotate.trek.formats import Keyring

# Names that say "secret"; hashes, expiry times, ids and flags about secrets say nothing.
_SECRET_NAME = re.compile(r"(api_?key|secret|password|passwd|passphrase|token|_pass|_sid|access_?key)$", re.I)
_NOT_SECRET_NAME = re.compile(r"(_hash|_expires_at|_id|_prefix|_version|^must_change_password)$", re.I)
# Tables and columns that look like stored credentials (issue 12): *_token, *secret*, *api_key*, *password*, ...
_CREDENTIAL_COLUMN = re.compile(r"(^|_)token$|secret|api_?key|password|passwd|passphrase|_pass$|_sid$|access_?key", re.I)
_CREDENTIAL_TABLE = re.compile(r"token|secret|api_?key|password|passphrase|credential", re.I)
_CREDENTIAL_TABLE_VALUES = frozenset({"value", "data", "config", "credential", "credentials", "key", "secret", "token"})
UNKNOWN = "unknown possible plaintext secret"
# TREK-FORMAT.md section 7: plaintext by TREK's design, named for what it is (hashes never match: see _NOT_SECRET_NAME).
KNOWN_PLAINTEXT: dict[tuple[str, str], tuple[str, str]] = {
    ("share_tokens", "token"): ("public trip share link tokens (plaintext by TREK's design)",
                                "anyone holding one reads the shared trip: delete the share links in TREK and share again"),
    ("journey_share_tokens", "token"): ("public journey share link tokens (plaintext by TREK's design)",
                                        "delete the journey share links in TREK and share again"),
    ("invite_tokens", "token"): ("registration invite tokens (plaintext by TREK's design)",
                                 "delete unused invites in TREK's admin; anyone holding one can register until it expires"),
}


def encrypt_command(db_path: Path) -> str:
    """The rotation that encrypts a database's legacy plaintext: its real data directory; NEW.key stands for the
    key to rotate to (the key in use works too)."""
    return shlex.join(["keyrotate", "rotate", "--data-dir", str(db_path.absolute().parent), "--new-key-file",
                       "NEW.key", "--encrypt-plaintext"])


@dataclass(frozen=True)
class AuditFinding:
    kind: str  # "plaintext in this TREK version" | "legacy plaintext" | "not encrypted by TREK" | UNKNOWN
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
            return [f"No plaintext secrets found in {self.database} ({self.trek_version})."]
        total = sum(f.values for f in self.findings)
        return [f"{total} plaintext value(s) in {len(self.findings)} location(s) of {self.database} "
                f"({self.trek_version}). Anyone with a copy of the database reads them without a key."]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "command": self.command, "database": self.database,
            "trek_version": self.trek_version, "clean": self.clean,
            "findings": [f.__dict__ for f in self.findings],
        }


def audit_database(db_path: Path, *, busy_timeout: float = 10.0) -> AuditReport:
    with read_session(db_path, busy_timeout) as session:
        findings = plaintext_in_this_version(session, db_path)
        # An empty keyring opens nothing, but the Scanner still counts plaintext where ciphertext belongs.
        scanner = Scanner(session.conn, session.info, session.resolved, Keyring(()))
        scanner.run("audit")
        findings += legacy_plaintext(scanner.tallies.values(), db_path)
        findings += _uncatalogued(session.conn, session.info.schema)
    return AuditReport(str(db_path), session.info.version.evidence, tuple(findings))


def plaintext_in_this_version(session: ReadSession, db_path: Path) -> list[AuditFinding]:
    """Catalogued locations this TREK version reads as plaintext, with their non-empty values counted."""
    findings = []
    for entry in session.resolved:
        if entry.presence is not Presence.PLAINTEXT_IN_THIS_VERSION:
            continue
        loc = entry.location
        count = _count_plaintext(session.conn, loc.table, loc.column, loc.setting_key, loc.key_column)
        if count:
            findings.append(AuditFinding(
                "plaintext in this TREK version", loc.label, loc.what, count,
                f"{entry.reason}. TREK {_encrypted_from(loc)} encrypts it: after upgrading, run {encrypt_command(db_path)}",
            ))
    return findings


def legacy_plaintext(tallies: Iterable[Tally], db_path: Path) -> list[AuditFinding]:
    """Plaintext a Scanner's pass counted in catalogued locations where this TREK version expects ciphertext."""
    by_label = {loc.label: loc for loc in CATALOGUE}
    findings = []
    for tally in tallies:
        known = by_label.get(tally.label)
        if not tally.catalogued or known is None or not tally.plaintext:
            continue
        command = encrypt_command(db_path)
        fix = (command if tally.encryptable_plaintext == tally.plaintext else
               f"{command} ({tally.plaintext - tally.encryptable_plaintext} value(s) it cannot rewrite "
               "safely: re-enter those in TREK)")
        findings.append(AuditFinding("legacy plaintext", tally.label, known.what, tally.plaintext, fix))
    return findings


def _looks_like_credential(table: str, column: str) -> bool:
    if _NOT_SECRET_NAME.search(column):
        return False
    if _CREDENTIAL_COLUMN.search(column) or _SECRET_NAME.search(column):
        return True
    return bool(_CREDENTIAL_TABLE.search(table)) and column.lower() in _CREDENTIAL_TABLE_VALUES


def _encrypted_from(loc: SecretLocation) -> str:
    release = loc.encrypted_since or loc.since
    return f"{release.name} (schema_version {release.schema_version}) and later"


def _count_plaintext(
    conn: sqlite3.Connection, table: str, column: str, setting_key: str | None, key_column: str = "key"
) -> int:
    col = quote_identifier(column)
    # Text only: a flag column such as plugin_settings_fields.secret holds 0/1, not a secret.
    where = f"typeof({col}) = 'text' AND {col} != '' AND substr({col}, 1, 7) != 'enc:v1:'"
    params: tuple[str, ...] = ()
    if setting_key is not None:
        where += f" AND {quote_identifier(key_column)} = ?"
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
            known = KNOWN_PLAINTEXT.get((table, column))
            if known is None and not _looks_like_credential(table, column):
                continue
            count = _count_plaintext(conn, table, column, None)
            if not count:
                continue
            if known is not None:
                out.append(AuditFinding("not encrypted by TREK", f"{table}.{column}", known[0], count, known[1]))
            else:
                out.append(AuditFinding(
                    UNKNOWN, f"{table}.{column}", "column or table named like a stored credential", count,
                    "keyrotate does not know this location (a newer TREK version?): check what it holds, limit who "
                    "can read the database and its backups, and report it to keyrotate and TREK if it is a credential",
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
                        UNKNOWN, f"{table}.value[{key}]", "setting named like a secret", int(count),
                        "TREK stores this setting as it is; keyrotate cannot encrypt it. Report it to TREK if it "
                        "holds a credential",
                    ))
    return out
