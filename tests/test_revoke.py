"""`rotate --revoke-share-links` / `--expire-invites`: TREK's plaintext bearer tokens removed inside the
rotation's transaction, only on request. Real fixtures (with tokens added), real CLI."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from click.testing import CliRunner, Result

from keyrotate.cli.app import main

from .conftest import TrekCopy, table_dump
from .test_bad_input import corrupt_ciphertext

# Written here, not imported from keyrotate, so the test checks the module's own definition of "open".
# max_uses 0 means no limit in TREK (it refuses an invite only when max_uses > 0 and used_count >= max_uses).
OPEN = ("(max_uses = 0 OR used_count < max_uses) AND (expires_at IS NULL OR julianday(expires_at) > "
        "julianday('now'))")
FLAGS = ["--revoke-share-links", "--expire-invites"]


def add_tokens(trek: TrekCopy) -> None:
    """The fixtures hold no share links or invites: add some of each kind, open and not."""
    with closing(sqlite3.connect(trek.db)) as conn:
        user = conn.execute("SELECT min(id) FROM users").fetchone()[0]
        for n, (trip,) in enumerate(conn.execute("SELECT id FROM trips ORDER BY id LIMIT 2").fetchall()):
            conn.execute("INSERT INTO share_tokens (trip_id, token, created_by) VALUES (?, ?, ?)",
                         (trip, f"share-{n}", user))
        journey = conn.execute("INSERT INTO journeys (user_id, title, created_at, updated_at) VALUES (?, 'j', 0, 0)",
                               (user,)).lastrowid
        conn.execute("INSERT INTO journey_share_tokens (journey_id, token, created_by) VALUES (?, 'jshare', ?)",
                     (journey, user))
        conn.executemany(
            "INSERT INTO invite_tokens (token, max_uses, used_count, expires_at, created_by) VALUES (?, ?, ?, ?, ?)",
            [("open-forever", 1, 0, None, user), ("open-future", 3, 1, "2999-01-01T00:00:00.000Z", user),
             ("used-up", 1, 1, None, user), ("expired", 1, 0, "2001-01-01T00:00:00.000Z", user),
             ("unlimited", 0, 7, None, user), ("unlimited-expired", 0, 0, "2001-01-01T00:00:00.000Z", user)])
        conn.commit()


def expected(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        links = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("share_tokens", "journey_share_tokens"))
        return {"share_links": links,
                "invites": conn.execute(f"SELECT count(*) FROM invite_tokens WHERE {OPEN}").fetchone()[0]}


def tokens(db: Path) -> dict[str, list[str]]:
    with closing(sqlite3.connect(db)) as conn:
        return {t: [r[0] for r in conn.execute(f"SELECT token FROM {t} ORDER BY token")]
                for t in ("share_tokens", "journey_share_tokens", "invite_tokens")}


def rotate(trek: TrekCopy, new_key_file: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, ["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(new_key_file),
                                     *extra], catch_exceptions=False)


def test_dry_run_counts_and_changes_nothing(trek: TrekCopy, new_key_file: Path) -> None:
    add_tokens(trek)
    want = expected(trek.db)
    assert want["share_links"] > 0 and want["invites"] > 0
    before = table_dump(trek.db)
    text = rotate(trek, new_key_file, "--dry-run", *FLAGS)
    assert text.exit_code == 0, text.stderr
    assert (f"Would delete {want['share_links']} share link(s), would expire {want['invites']} open invite(s)."
            in text.stderr)
    as_json = rotate(trek, new_key_file, "--dry-run", "--json", *FLAGS)
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads(as_json.stdout)["revoked"] == want
    assert table_dump(trek.db) == before


def test_real_run_removes_exactly_the_open_tokens_and_logs_the_counts(trek: TrekCopy, new_key_file: Path) -> None:
    add_tokens(trek)
    want = expected(trek.db)
    with closing(sqlite3.connect(trek.db)) as conn:
        kept = sorted(r[0] for r in conn.execute(f"SELECT token FROM invite_tokens WHERE NOT ({OPEN})"))
    assert kept  # used-up and expired invites stay
    result = rotate(trek, new_key_file, "--json", *FLAGS)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["revoked"] == want
    assert tokens(trek.db) == {"share_tokens": [], "journey_share_tokens": [], "invite_tokens": kept}
    with closing(sqlite3.connect(trek.db)) as conn:
        [details] = conn.execute("SELECT details FROM audit_log WHERE action = 'keyrotate.rotate_encryption_key'"
                                 ).fetchone()
    logged = json.loads(details)
    assert (logged["revoked_share_links"], logged["revoked_invites"]) == (want["share_links"], want["invites"])


def test_text_summary_and_one_flag_alone(trek3: TrekCopy, new_key_file: Path) -> None:
    add_tokens(trek3)
    want, before = expected(trek3.db), tokens(trek3.db)
    result = rotate(trek3, new_key_file, "--expire-invites")
    assert result.exit_code == 0, result.stderr
    assert f"Expired (deleted) {want['invites']} open invite(s)." in result.stderr
    after = tokens(trek3.db)
    assert after["share_tokens"] == before["share_tokens"] and after["journey_share_tokens"] == before["journey_share_tokens"]
    assert len(after["invite_tokens"]) == len(before["invite_tokens"]) - want["invites"]


def test_never_by_default(trek3: TrekCopy, new_key_file: Path) -> None:
    add_tokens(trek3)
    before = tokens(trek3.db)
    result = rotate(trek3, new_key_file, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["revoked"] == {}
    assert tokens(trek3.db) == before


def test_failed_rotation_leaves_the_tokens_in_place(trek: TrekCopy, new_key_file: Path) -> None:
    add_tokens(trek)
    corrupt_ciphertext(trek, "bad tag")
    before = table_dump(trek.db)
    result = rotate(trek, new_key_file, *FLAGS)
    assert result.exit_code == 8, result.stderr
    assert table_dump(trek.db) == before


def test_absent_tables_are_skipped(trek3: TrekCopy, new_key_file: Path) -> None:
    with closing(sqlite3.connect(trek3.db)) as conn:
        for table in ("share_tokens", "journey_share_tokens", "invite_tokens"):
            conn.execute(f"DROP TABLE {table}")
        conn.commit()
    result = rotate(trek3, new_key_file, "--json", *FLAGS)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["revoked"] == {"share_links": 0, "invites": 0}


def audit_rows(db: Path) -> list[dict[str, int]]:
    with closing(sqlite3.connect(db)) as conn:
        return [json.loads(d) for (d,) in conn.execute(
            "SELECT details FROM audit_log WHERE action = 'keyrotate.rotate_encryption_key' ORDER BY id")]


def backups_beside(trek: TrekCopy) -> list[str]:
    return sorted(p.name for p in trek.data_dir.glob("travel.db.keyrotate-backup-*") if not p.name.endswith(".key"))


def test_nothing_left_to_rotate_still_revokes_in_one_commit(trek: TrekCopy, new_key_file: Path) -> None:
    """Every secret already under the new key (a rerun): the revocation and its audit row are still committed."""
    first = rotate(trek, new_key_file)
    assert first.exit_code == 0, first.stderr
    add_tokens(trek)
    want, before = expected(trek.db), table_dump(trek.db)
    assert want["share_links"] > 0 and want["invites"] > 0

    dry = rotate(trek, new_key_file, "--dry-run", "--json", *FLAGS)
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout)["revoked"] == want
    assert table_dump(trek.db) == before

    result = rotate(trek, new_key_file, "--json", *FLAGS)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["revoked"], report["totals"]["rotated"], report["committed"]) == (want, 0, True)
    assert report["verified_after_commit"] and report["backup"] is not None
    assert not any(t for t in tokens(trek.db)["share_tokens"] + tokens(trek.db)["journey_share_tokens"])
    logged = audit_rows(trek.db)
    assert len(logged) == 2 and logged[-1]["secrets_rotated"] == 0
    assert (logged[-1]["revoked_share_links"], logged[-1]["revoked_invites"]) == (want["share_links"], want["invites"])
    assert "Nothing needed re-encrypting" not in result.stderr


def test_nothing_to_rotate_or_revoke_commits_nothing_and_keeps_no_backup(trek: TrekCopy, new_key_file: Path) -> None:
    first = rotate(trek, new_key_file, *FLAGS)
    assert first.exit_code == 0, first.stderr
    backups, before = backups_beside(trek), table_dump(trek.db)

    again = rotate(trek, new_key_file, "--json", *FLAGS)

    assert again.exit_code == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["committed"], report["revoked"]) == (False, {"share_links": 0, "invites": 0})
    assert table_dump(trek.db) == before
    assert len(audit_rows(trek.db)) == 1
    assert backups_beside(trek) == backups


def test_a_revoke_only_run_says_what_it_revoked(trek3: TrekCopy, new_key_file: Path) -> None:
    """Nothing left to re-encrypt (a rerun): the text summary names the tokens this run deleted."""
    first = rotate(trek3, new_key_file)
    assert first.exit_code == 0, first.stderr
    add_tokens(trek3)
    want = expected(trek3.db)

    result = rotate(trek3, new_key_file, *FLAGS)

    assert result.exit_code == 0, result.stderr
    assert (f"Deleted {want['share_links']} share link(s), expired (deleted) {want['invites']} open invite(s)."
            in result.stderr)
    assert "no token was revoked" not in result.stderr
    left = tokens(trek3.db)
    assert left["share_tokens"] == left["journey_share_tokens"] == []
    with closing(sqlite3.connect(trek3.db)) as conn:
        assert conn.execute(f"SELECT count(*) FROM invite_tokens WHERE {OPEN}").fetchone()[0] == 0
