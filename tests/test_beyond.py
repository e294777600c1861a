"""The "beyond the encryption key" findings, counted against the fixtures themselves (SQL here, not constants)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.cli.exposure_render import render_exposure
from keyrotate.cli.render import FORMATS
from keyrotate.operations.exposure import find_exposure

from .conftest import TrekCopy

TOKENS = ("share-token-PLAIN-1", "share-token-PLAIN-2", "journey-token-PLAIN", "invite-open-PLAIN",
          "invite-used-PLAIN", "invite-expired-PLAIN", "invite-forever-PLAIN",
          "invite-unlimited-PLAIN")


def add_tokens(trek: TrekCopy) -> None:
    """Share links, journey links and invites in every state, as TREK would write them."""
    with closing(sqlite3.connect(trek.db)) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        trip = conn.execute("INSERT INTO trips (user_id, title) VALUES (1, 'Oslo')").lastrowid
        for token in TOKENS[:2]:
            conn.execute("INSERT INTO share_tokens (trip_id, token, created_by) VALUES (?, ?, 1)", (trip, token))
        conn.execute("INSERT INTO journey_share_tokens (journey_id, token, created_by) VALUES (1, ?, 1)", (TOKENS[2],))
        invites = ((TOKENS[3], 1, 0, "2999-01-01T00:00:00Z"), (TOKENS[4], 1, 1, None),
                   (TOKENS[5], 5, 0, "2000-01-01T00:00:00Z"), (TOKENS[6], 3, 2, None), (TOKENS[7], 0, 9, None))
        conn.executemany("INSERT INTO invite_tokens (token, max_uses, used_count, expires_at, created_by) "
                         "VALUES (?, ?, ?, ?, 1)", invites)
        conn.execute("INSERT INTO mcp_tokens (user_id, name, token_hash, token_prefix) VALUES (2, 'x', 'h', 'p')")
        conn.execute("UPDATE users SET role = 'admin' WHERE id = 3")
        conn.commit()


def expected_counts(trek: TrekCopy) -> dict[str, int]:
    with closing(sqlite3.connect(trek.db)) as conn:
        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])
        return {
            "session-signing secret": 1,
            "public trip share links": one("SELECT count(*) FROM share_tokens"),
            "public journey share links": one("SELECT count(*) FROM journey_share_tokens"),
            "open registration invites": one(
                "SELECT count(*) FROM invite_tokens WHERE (max_uses = 0 OR used_count < max_uses) AND "
                "(expires_at IS NULL OR expires_at > strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))"),
            "users with a local password": one("SELECT count(*) FROM users WHERE password_hash != ''"),
            "hashed API, OAuth and password-reset tokens": one(
                "SELECT (SELECT count(*) FROM mcp_tokens) + (SELECT count(*) FROM oauth_tokens) "
                "+ (SELECT count(*) FROM password_reset_tokens)"),
        }


def test_counts_match_the_fixture(trek: TrekCopy) -> None:
    add_tokens(trek)
    found = {f.what: f.count for f in find_exposure(trek.db, [trek.key], check_copies=False).beyond}
    assert found == expected_counts(trek)
    assert found["open registration invites"] == 3  # the open one, the one that never expires, the unlimited one
    with closing(sqlite3.connect(trek.db)) as conn:
        admins = conn.execute("SELECT count(*) FROM users WHERE role = 'admin' AND password_hash != ''").fetchone()[0]
    passwords = next(f for f in find_exposure(trek.db, [trek.key], check_copies=False).beyond
                     if f.what == "users with a local password")
    assert f"of them {admins} admin(s)" in passwords.risk and "offline guessing" in passwords.risk


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_has_the_section_and_no_value(trek4: TrekCopy, fmt: str) -> None:
    add_tokens(trek4)
    text = render_exposure(find_exposure(trek4.db, [trek4.key], check_copies=False), fmt)
    assert "open registration invites" in text and "Low risk" in text
    for secret in (*TOKENS, (trek4.data_dir / ".jwt_secret").read_text().strip()):
        assert secret not in text
    with closing(sqlite3.connect(trek4.db)) as conn:
        for (stored,) in conn.execute("SELECT password_hash FROM users"):
            assert stored not in text


def test_absent_tables_are_skipped_silently(trek3: TrekCopy) -> None:
    with closing(sqlite3.connect(trek3.db)) as conn:
        for table in ("share_tokens", "journey_share_tokens", "invite_tokens", "mcp_tokens", "oauth_tokens",
                      "password_reset_tokens"):
            conn.execute(f"DROP TABLE {table}")
        conn.commit()
    (trek3.data_dir / ".jwt_secret").unlink()
    found = [f.what for f in find_exposure(trek3.db, [trek3.key], check_copies=False).beyond]
    assert found == ["users with a local password"]


def test_cli_json_has_beyond(trek4: TrekCopy) -> None:
    add_tokens(trek4)
    result = CliRunner().invoke(main, ["exposure", "--data-dir", str(trek4.data_dir), "--format", "json"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    beyond = {f["what"]: f["count"] for f in json.loads(result.stdout)["beyond"]}
    assert beyond == expected_counts(trek4)
