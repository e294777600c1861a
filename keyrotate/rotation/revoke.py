"""Revoking TREK's plaintext bearer tokens inside the rotation's own transaction.

TREK-FORMAT.md section 7: share links (``share_tokens``, ``journey_share_tokens``)
and registration invites (``invite_tokens``) are stored in plaintext, so whoever
copied the data directory can use them. Only on explicit request, never by
default; tables a database does not have are skipped silently.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from keyrotate.store.database import quote_identifier
from keyrotate.trek.beyond import OPEN_INVITES
from keyrotate.trek.schema import fold_name

SHARE_TABLES = ("share_tokens", "journey_share_tokens")


@dataclass(frozen=True)
class Revocation:
    """What the user asked to revoke."""

    share_links: bool = False
    invites: bool = False

    @property
    def asked(self) -> bool:
        return self.share_links or self.invites


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {fold_name(row[1]) for row in conn.execute(f"PRAGMA table_info({quote_identifier(table)})")}


def revoke_tokens(conn: sqlite3.Connection, revocation: Revocation) -> dict[str, int]:
    """Delete what ``revocation`` asks for on ``conn``, inside its open transaction; the counts.

    The caller commits or rolls back (a dry run rolls back, so its counts are what a real run
    would remove). Open invites are deleted rather than given a past ``expires_at``: deleting is
    what TREK's admin panel does, and it does not depend on how TREK parses the date text.
    Used-up and expired invites stay, as TREK's own history.
    """
    counts: dict[str, int] = {}
    if revocation.share_links:
        counts["share_links"] = sum(
            conn.execute(f"DELETE FROM {quote_identifier(table)}").rowcount
            for table in SHARE_TABLES if "token" in _columns(conn, table))
    if revocation.invites:
        counts["invites"] = 0
        if {"token", "max_uses", "used_count", "expires_at"} <= _columns(conn, "invite_tokens"):
            counts["invites"] = conn.execute(f"DELETE FROM invite_tokens WHERE {OPEN_INVITES}").rowcount
    return counts


def describe(counts: dict[str, int], *, dry_run: bool) -> str:
    """One line for the summary: what was (or would be) revoked."""
    parts = []
    if "share_links" in counts:
        parts.append(f"{'would delete' if dry_run else 'deleted'} {counts['share_links']} share link(s)")
    if "invites" in counts:
        parts.append(f"{'would expire' if dry_run else 'expired (deleted)'} {counts['invites']} open invite(s)")
    line = ", ".join(parts)
    return line[:1].upper() + line[1:] + "."
