"""What a copy of TREK's data directory gives away besides the secrets ENCRYPTION_KEY opens.

TREK-FORMAT.md section 7: the session-signing secret, plaintext bearer tokens,
password hashes and hashed tokens. Counts and the action for each, never a
value. Tables a database does not have are skipped silently.
"""

from __future__ import annotations

import shlex
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyrotate.store.database import quote_identifier

Schema = Mapping[str, Sequence[str]]
# The findings a ``rotate`` run can deal with itself, and so tick off: --rotate-jwt-secret, --revoke-share-links,
# --expire-invites.
SESSION_SECRET = "session-signing secret"
SHARE_LINKS = "public trip share links"
JOURNEY_LINKS = "public journey share links"
INVITES = "open registration invites"


@dataclass(frozen=True)
class Finding:
    what: str
    where: str
    count: int
    risk: str  # what it allows, in words
    action: str
    done: bool = False  # the run that reports it already did the action (rotate --incident --rotate-jwt-secret)

    def to_json(self) -> dict[str, object]:
        return {"what": self.what, "where": self.where, "count": self.count, "risk": self.risk,
                "action": self.action, "done": self.done}

    @property
    def settled(self) -> bool:
        """Nothing left to do: done by the run that reports it, or none found."""
        return self.done or self.count == 0

    def line(self) -> str:
        if self.count == 0 and not self.done:
            return f"{self.what}: 0 ({self.where}): nothing to do."
        return f"{self.what}: {self.count} ({self.where}). {self.risk} Do: {self.action}"


def _has(schema: Schema, table: str, *columns: str) -> bool:
    return table in schema and all(c in schema[table] for c in columns)


def _count(conn: sqlite3.Connection, table: str, where: str = "1") -> int:
    return int(conn.execute(f"SELECT count(*) FROM {quote_identifier(table)} WHERE {where}").fetchone()[0])


# An invite still works while it has uses left and has not expired (NULL: never expires). TREK refuses one only
# when max_uses > 0 and used_count >= max_uses: max_uses 0 (or NULL) is an invite without limit, the worst to leak.
OPEN_INVITES = ("(coalesce(max_uses, 0) <= 0 OR coalesce(used_count, 0) < max_uses) AND (expires_at IS NULL "
                "OR expires_at = '' OR julianday(expires_at) > julianday('now'))")
LOCAL_PASSWORD = "password_hash IS NOT NULL AND password_hash != ''"


def find_beyond(conn: sqlite3.Connection, schema: Schema, data_dir: Path | None) -> tuple[Finding, ...]:
    out: list[Finding] = []
    if data_dir is not None and (data_dir / ".jwt_secret").is_file():
        command = shlex.join(["keyrotate", "rotate-jwt-secret", "--data-dir", str(data_dir.absolute())])
        out.append(Finding(
            SESSION_SECRET, str(data_dir / ".jwt_secret"), 1,
            "Signs every TREK session: with it anyone can sign in as any user, admins included.",
            f"replace it, which signs everyone out: `{command}` "
            "(TREK stopped; or `rotate --rotate-jwt-secret`), or TREK's admin action POST /api/admin/rotate-jwt-secret"))
    out += _bearer_tokens(conn, schema)
    if _has(schema, "users", "password_hash"):
        admins = ""
        if _has(schema, "users", "role"):
            n = _count(conn, "users", f"{LOCAL_PASSWORD} AND role = 'admin'")
            admins = f" of them {n} admin(s)"
        out.append(Finding(
            "users with a local password", "users.password_hash (bcrypt)", _count(conn, "users", LOCAL_PASSWORD),
            f"Bcrypt hashes allow offline guessing of weak passwords{admins and ','}{admins}.",
            "ask these users (admins first) to change their TREK password, and any other account that reuses it"))
    out += _hashed_tokens(conn, schema)
    return tuple(out)


def _bearer_tokens(conn: sqlite3.Connection, schema: Schema) -> list[Finding]:
    out = []
    if _has(schema, "share_tokens", "token"):
        out.append(Finding(
            SHARE_LINKS, "share_tokens.token (plaintext)", _count(conn, "share_tokens"),
            "Anyone with a link reads the shared trip.",
            "delete the links in each trip's share dialog in TREK and create new ones where still wanted"))
    if _has(schema, "journey_share_tokens", "token"):
        out.append(Finding(
            JOURNEY_LINKS, "journey_share_tokens.token (plaintext)",
            _count(conn, "journey_share_tokens"), "Anyone with a link reads the shared journey.",
            "delete the links in each journey's share dialog in TREK and create new ones where still wanted"))
    if _has(schema, "invite_tokens", "token", "max_uses", "used_count", "expires_at"):
        out.append(Finding(
            INVITES, "invite_tokens.token (plaintext; unused and unexpired)",
            _count(conn, "invite_tokens", OPEN_INVITES), "Anyone with one can register an account.",
            "delete the open invites in TREK's admin panel and send new ones"))
    return out


def _hashed_tokens(conn: sqlite3.Connection, schema: Schema) -> list[Finding]:
    hashed = [(t, c) for t, c in (("mcp_tokens", "token_hash"), ("oauth_tokens", "access_token_hash"),
                                   ("oauth_tokens", "refresh_token_hash"), ("password_reset_tokens", "token_hash"))
              if _has(schema, t, c)]
    tables = dict.fromkeys(t for t, _ in hashed)
    if not tables:
        return []
    total = sum(_count(conn, t) for t in tables)
    return [Finding(
        "hashed API, OAuth and password-reset tokens", ", ".join(f"{t}.{c}" for t, c in hashed), total,
        "Low risk: only hashes are stored, which do not give the tokens back.",
        "nothing urgent; revoke MCP and OAuth tokens in TREK's settings if you want to be thorough")]
