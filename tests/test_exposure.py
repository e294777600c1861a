"""The leak-response checklist against the real 4.2-shape fixture."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.cli.exposure_render import render_exposure as render
from keyrotate.cli.printable import csv_cell
from keyrotate.cli.render import FORMATS
from keyrotate.operations.backup_rekey import rekey_backup
from keyrotate.operations.exposure import find_exposure
from keyrotate.operations.exposure_groups import API_KEYS, DENSE_IDS, INSTANCE, SIGN_IN, GroupTally
from keyrotate.store.backup import backup_database
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key

from .conftest import TrekCopy, table_dump
from .ziphelpers import build_backup_zip

NEW = Key("the new key for exposure tests", "new test key")


def manifest_address(entry: dict[str, Any]) -> tuple[str, str, tuple[tuple[str, Any], ...], str]:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in entry.get("json_path") or ())
    return entry["table"], entry["column"], tuple(sorted(entry["key"].items())), ("$" + path) if path else ""


def test_every_manifest_secret_is_named_exactly_once(trek4: TrekCopy) -> None:
    report = find_exposure(trek4.db, [trek4.key])
    named = Counter((s.table, s.column, tuple(sorted(s.row.items())), s.path) for s in report.secrets)
    expected = [manifest_address(e) for e in trek4.encrypted_entries()]
    assert expected  # every encrypted secret of the manifest, none left out
    for address in expected:
        assert named[address] == 1, address
    assert sum(named.values()) == len(expected)  # nothing named twice, nothing extra
    assert report.plaintext == sum(e["scheme"] == "legacy-plain" for e in trek4.manifest)
    assert report.not_opened == 0


def test_descriptions_are_specific(trek4: TrekCopy) -> None:
    by_address = {(s.table, s.column, tuple(sorted(s.row.items())), s.path): s
                  for s in find_exposure(trek4.db, [trek4.key]).secrets}
    s3 = by_address[("app_settings", "value", (("key", "storage.backends"),), "$[1].options.secretAccessKey")]
    assert s3.what == "S3 secret access key for backend 'offsite'" and s3.owner == "instance"
    token = by_address[("plugin_oauth_tokens", "access_token",
                        (("plugin_id", "trek-plugin-flighty"), ("user_id", 14)), "")]
    assert token.what == "plugin OAuth access token for trek-plugin-flighty"
    assert token.owner == "user 14 (user12)"
    secret = by_address[("plugins", "config", (("id", "trek-plugin-splitwise"),), "$.oauth_client_secret")]
    assert "Client secret" in secret.what and "trek-plugin-splitwise" in secret.what
    mfa = [s for s in by_address.values() if s.column == "mfa_secret"]
    assert len(mfa) == 10 and all("re-enrol MFA" in s.action for s in mfa)
    smtp = by_address[("app_settings", "value", (("key", "smtp_pass"),), "")]
    assert (smtp.what, smtp.owner) == ("SMTP password", "instance")


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_value_and_no_key_in_any_format(trek4: TrekCopy, fmt: str) -> None:
    text = render(find_exposure(trek4.db, [trek4.key]), fmt)
    assert trek4.key.reveal() not in text
    for entry in trek4.manifest:
        assert entry["plaintext"] not in text, entry["table"]
    with closing(sqlite3.connect(trek4.db)) as conn:
        stored = conn.execute("SELECT maps_api_key FROM users WHERE maps_api_key IS NOT NULL").fetchone()[0]
    assert stored not in text  # not even the ciphertext


def test_json_and_csv_carry_every_secret_with_its_group(trek4: TrekCopy) -> None:
    report = find_exposure(trek4.db, [trek4.key])
    n = len(report.secrets)
    rows = [r for r in csv.DictReader(io.StringIO(render(report, "csv")))
            if not r["group"].startswith("Beyond") and r["group"] not in ("Stored in plaintext", "Not fixed by rotating")]
    assert len(rows) == n and {r["group"] for r in rows} == {s.group for s in report.secrets}
    document = json.loads(render(report, "json"))
    assert len(document["secrets"]) == n == document["totals"]["exposed"]
    assert sum(k["count"] for g in document["groups"] for k in g["kinds"]) == n
    photo = next(s for s in document["secrets"] if s["table"] == "trek_photos")
    assert photo["group"] == "Share passphrases"


def _expected_lines(trek4: TrekCopy) -> dict[str, set[str]]:
    """From the manifest: per tier, the instance secrets' labels and the users holding something."""
    report = find_exposure(trek4.db, [trek4.key])
    per_tier: dict[str, set[str]] = {}
    for s in report.secrets:
        per_tier.setdefault(s.group, set()).add(s.what if s.owner_id is None else s.owner)
    return per_tier


def test_text_checklist_groups_by_what_and_whose_worst_first(trek4: TrekCopy) -> None:
    text = render(find_exposure(trek4.db, [trek4.key]), "text")
    expected = _expected_lines(trek4)
    n_users = len({e["key"].get("user_id", e["key"].get("id")) for e in trek4.encrypted_entries()
                   if e["table"] == "users" or "user_id" in e["key"]})
    assert text.startswith(f"Secrets readable with the suspected key: {len(trek4.encrypted_entries())} (")
    headings = [line for line in text.splitlines() if re.match(r"^\d\. ", line)]
    assert [h.split(" (")[0] for h in headings] == ["1. Instance credentials", "2. Sign-in secrets and OAuth tokens",
                                                    "3. API keys and tokens", "4. Share passphrases"]
    # The secrets the key opens and the "beyond" section; values stored in plaintext have a section of their own.
    checklist = text.split("\nStored in PLAINTEXT (readable without any key)")[0]
    boxes = [line.strip() for line in checklist.splitlines() if line.strip().startswith("[ ] ")]
    per_user = [b for b in boxes if b.startswith("[ ] user ")]
    # One line per instance secret, one per user and tier: far fewer lines than secrets.
    # Findings with nothing found are ticked ("[x] ...: 0 (...): nothing to do."): a box only for what is left.
    assert len(boxes) - len(per_user) - len(expected.get("Instance credentials", ())) == sum(
        not f.settled for f in find_exposure(trek4.db, [trek4.key]).beyond)
    assert len(per_user) == sum(len(v) for k, v in expected.items() if k != "Instance credentials")
    assert len({b.split(":")[0] for b in per_user}) <= n_users
    with closing(sqlite3.connect(trek4.db)) as conn:
        owner, provider, count = conn.execute(
            "SELECT owner_id, provider, count(*) FROM trek_photos WHERE passphrase LIKE 'enc:v1:%' "
            "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1").fetchone()
    line = next(b for b in per_user if b.startswith(f"[ ] user {owner} ") and "photo passphrase" in b)
    assert f"{count} photo passphrases ({provider})" in line
    assert "where: Immich API key -> Immich > Account settings > API keys" in text
    assert len(text.splitlines()) < len(trek4.encrypted_entries())


def test_markdown_checklist_has_the_same_lines(trek4: TrekCopy) -> None:
    report = find_exposure(trek4.db, [trek4.key])
    text, markdown = render(report, "text"), render(report, "markdown")
    assert markdown.count("\n- [ ] ") == text.count("[ ] ")
    assert "### Beyond the encryption key" in markdown


def test_counting_only_gives_the_same_groups(trek4: TrekCopy) -> None:
    kept = find_exposure(trek4.db, [trek4.key])
    streamed: list[Any] = []
    counted = find_exposure(trek4.db, [trek4.key], keep_secrets=False, on_secret=streamed.append)
    only = find_exposure(trek4.db, [trek4.key], keep_secrets=False)
    assert counted.secrets == () and only.secrets == ()
    assert list(kept.groups.lines()) == list(counted.groups.lines()) == list(only.groups.lines())
    assert kept.groups.total == only.groups.total > 0
    assert sorted(map(repr, streamed)) == sorted(map(repr, kept.secrets))


def test_a_key_that_opens_nothing_exposes_nothing(trek4: TrekCopy) -> None:
    report = find_exposure(trek4.db, [Key("some other key", "other")])
    assert report.secrets == () and report.not_opened == len(trek4.encrypted_entries())


def test_copies_the_rotation_cannot_fix(trek4: TrekCopy) -> None:
    before = table_dump(trek4.db)
    keyrotate_copy = trek4.db.with_name("travel.db.keyrotate-backup-20260101T000000Z")
    backup_database(trek4.db, keyrotate_copy)
    script_copy = trek4.db.with_name("travel.db.backup-1767225600000")
    script_copy.write_bytes(keyrotate_copy.read_bytes())
    os.chmod(script_copy, 0o644)  # as TREK's script leaves it
    folder = trek4.data_dir / "backups"
    folder.mkdir()
    old_zip = build_backup_zip(trek4.db, folder / "backup-old.zip")
    rekeyed_zip = build_backup_zip(trek4.db, folder / "auto-backup-new.zip")
    assert rekey_backup(rekeyed_zip, [trek4.key], NEW).outcome == "rekeyed"

    copies = {Path(c.path).name: c for c in find_exposure(trek4.db, [trek4.key]).copies}

    assert set(copies) == {keyrotate_copy.name, script_copy.name, old_zip.name}
    assert "0644" in copies[script_copy.name].note
    assert "opens all" in copies[old_zip.name].note
    assert table_dump(trek4.db) == before  # read-only


def test_exposure_cli_and_rotate_incident(trek4: TrekCopy, tmp_path: Path) -> None:
    runner = CliRunner()
    old_key = trek4.key  # read now: the rotation replaces data/.encryption_key
    listed = runner.invoke(main, ["exposure", "--data-dir", str(trek4.data_dir), "--format", "json"],
                           catch_exceptions=False)
    assert listed.exit_code == 0
    assert json.loads(listed.stdout)["totals"]["exposed"] == len(trek4.encrypted_entries())

    new_key_file = tmp_path / "new.key"
    rotated = runner.invoke(
        main, ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out", str(new_key_file),
               "--incident"],
        catch_exceptions=False,
    )
    assert rotated.exit_code == 0, rotated.stderr
    assert rotated.stdout.startswith(f"Secrets readable with the suspected key: {len(trek4.encrypted_entries())} (")
    # The backup this very rotation made is still under the leaked key, and the checklist says so.
    backup = next(p for p in trek4.data_dir.glob("travel.db.keyrotate-backup-*") if p.suffix != ".key")
    assert f"NOT FIXED BY ROTATING: {backup}" in rotated.stdout
    # ... and names the old key saved beside it, which opens it.
    assert f"saved beside it in {backup}.key" in " ".join(rotated.stdout.split())
    new_key = Key(new_key_file.read_text().strip(), "new")
    assert (trek4.data_dir / ".encryption_key").read_text() == new_key.reveal()
    assert find_exposure(trek4.db, [old_key], check_copies=False).secrets == ()
    assert len(find_exposure(trek4.db, [new_key], check_copies=False).secrets) == len(trek4.encrypted_entries())


def test_incident_checklist_is_printed_even_when_the_rotation_refuses(trek4: TrekCopy, tmp_path: Path) -> None:
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id = 2",
                     (Cipher(Key("a third key", "x"), Scheme.API).seal(b"whatever"),))
        conn.commit()
    before = table_dump(trek4.db)
    result = CliRunner().invoke(
        main, ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out",
               str(tmp_path / "new.key"), "--incident"],
        catch_exceptions=False,
    )
    assert result.exit_code == 8
    heading, checklist = result.stdout.split("\n\n", 1)
    assert heading.startswith("ROTATION FAILED (exit 8)")  # not to be read as the checklist of a rotated database
    assert checklist.startswith(f"Secrets readable with the suspected key: {len(trek4.encrypted_entries()) - 1} (")
    assert table_dump(trek4.db) == before


def test_tokens_outside_the_catalogue_are_named_with_their_owner(trek4: TrekCopy) -> None:
    token = Cipher(trek4.key, Scheme.API).seal(b"a token someone pasted into a trip")
    with closing(sqlite3.connect(trek4.db)) as conn:
        trip_id = conn.execute("INSERT INTO trips (user_id, title, description) VALUES (3, 'Lisbon', ?)",
                               (f"door code in {token} ok",)).lastrowid
        conn.commit()
    report = find_exposure(trek4.db, [trek4.key])
    outside = [s for s in report.secrets if s.table == "trips"]
    assert len(report.secrets) == len(trek4.encrypted_entries()) + 1 and len(outside) == 1
    assert outside[0].what == "unknown secret found outside the catalogue in trips.description"
    assert outside[0].owner == "user 3 (user1)" and outside[0].row == {"id": trip_id, "user_id": 3}
    assert token not in render(report, "json")


def test_streamed_records_are_what_the_json_and_csv_modules_write(trek4: TrekCopy) -> None:
    """The CLI formats each record itself (speed): byte for byte what json.dumps and csv.writer write."""
    with closing(sqlite3.connect(trek4.db)) as conn:  # names that need quoting, escaping and non-ASCII
        conn.execute("""UPDATE users SET username = username || ', "q"' || char(10) || 'ü' WHERE id % 3 = 1""")
        conn.execute("""UPDATE users SET username = username || ' "q" ü' WHERE id % 3 = 2""")
        conn.commit()
    secrets = find_exposure(trek4.db, [trek4.key], check_copies=False).secrets
    assert any("\n" in s.owner for s in secrets) and any('"q" ü)' in s.owner for s in secrets)
    assert any(s.row.get("key") for s in secrets)
    args = ["exposure", "--data-dir", str(trek4.data_dir), "--no-copies", "--format"]
    json_out = CliRunner().invoke(main, [*args, "json"], catch_exceptions=False).stdout
    assert '"secrets": [\n    ' + ",\n    ".join(json.dumps(s.to_json(), default=str) for s in secrets) + "\n  ]" \
        in json_out
    expected = io.StringIO()  # cells escaped as text and markdown escape them (a line break shows as \n)
    csv.writer(expected, lineterminator="\n").writerows(
        [("what", "owner", "where", "revoke or reissue at", "group")]
        + [tuple(csv_cell(cell) for cell in (s.what, s.owner, s.where, s.action, s.group)) for s in secrets])
    assert "\\n" in expected.getvalue()
    assert CliRunner().invoke(main, [*args, "csv"], catch_exceptions=False).stdout.startswith(expected.getvalue())


def test_a_plain_totp_seed_is_counted_once_as_plaintext_not_as_unopened(trek4: TrekCopy) -> None:
    before = find_exposure(trek4.db, [trek4.key], check_copies=False)
    with closing(sqlite3.connect(trek4.db)) as conn, conn:
        user = conn.execute("SELECT min(id) FROM users WHERE mfa_secret IS NOT NULL AND mfa_secret != ''").fetchone()[0]
        assert user is not None, "the fixture has a user with an encrypted TOTP seed"
        conn.execute("UPDATE users SET mfa_secret = 'JBSWY3DPEHPK3PXP' WHERE id = ?", (user,))
    after = find_exposure(trek4.db, [trek4.key], check_copies=False)
    assert after.plaintext == before.plaintext + 1
    assert after.not_opened == before.not_opened  # readable without any key: not a value the key fails to open
    assert after.exposed == before.exposed - 1  # the key no longer opens that seed: it is reported as plaintext
    assert not any(s.table == "users" and s.column == "mfa_secret" and s.row.get("id") == user for s in after.secrets)


def test_group_lines_come_by_tier_then_owner_id_whatever_the_ids() -> None:
    groups = GroupTally()
    far = DENSE_IDS + 5  # counted in the dict, not the arrays
    for owner_id, tier, what in [(far, API_KEYS, "b key"), (3, API_KEYS, "b key"), (3, API_KEYS, "a key"),
                                 (-2, API_KEYS, "a key"), (None, INSTANCE, "z secret"), (None, INSTANCE, "y secret"),
                                 (3, SIGN_IN, "TOTP seed"), (3, API_KEYS, "a key")]:
        groups.add(tier, owner_id, what, f"revoke {what}")
    groups.names.update({3: "anna", -2: None})
    lines = [(line.tier, line.owner, line.kinds) for line in groups.lines()]
    assert lines == [(INSTANCE, "instance", [("y secret", 1)]), (INSTANCE, "instance", [("z secret", 1)]),
                     (SIGN_IN, "user 3 (anna)", [("TOTP seed", 1)]),
                     (API_KEYS, "user -2", [("a key", 1)]), (API_KEYS, "user 3 (anna)", [("a key", 2), ("b key", 1)]),
                     (API_KEYS, f"user {far}", [("b key", 1)])]
    assert groups.users() == 3 and groups.total == 8
    assert groups.per_tier() == {INSTANCE[1]: 2, SIGN_IN[1]: 1, API_KEYS[1]: 5}
    assert groups.user_actions(API_KEYS) == [("a key", "revoke a key"), ("b key", "revoke b key")]


def test_after_the_rotation_the_old_key_points_at_the_copy_from_before_it(trek4: TrekCopy, tmp_path: Path) -> None:
    """The stolen copy was the database before the rotation: "readable: 0" on the rotated file is true but no
    answer. The printed command, run as printed, lists what the pre-rotation backup gives away."""
    old = tmp_path / "old.key"
    old.write_text((trek4.data_dir / ".encryption_key").read_text())
    old.chmod(0o600)
    new = tmp_path / "new.key"
    new.write_text("N" * 64)
    new.chmod(0o600)
    rotated = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new),
                                        "--yes"], catch_exceptions=False)
    assert rotated.exit_code == 0, rotated.output
    after = CliRunner().invoke(main, ["exposure", "--data-dir", str(trek4.data_dir), "--key-file", str(old)],
                               catch_exceptions=False)
    assert after.exit_code == 0 and "Secrets readable with the suspected key: 0" in after.stdout
    command = after.stderr.split("Its checklist of what to revoke:\n", 1)[1].strip().splitlines()[0]
    words = shlex.split(command)
    assert words[:2] == ["keyrotate", "exposure"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    before = subprocess.run([sys.executable, "-m", "keyrotate", *words[1:]], capture_output=True, text=True, env=env,
                            check=False)
    assert before.returncode == 0, before.stderr
    readable = int(re.search(r"Secrets readable with the suspected key: (\d+)", before.stdout)[1])  # type: ignore[index]
    assert readable == sum(1 for e in trek4.manifest if e["scheme"] in ("api", "mfa"))
    same_key = CliRunner().invoke(main, ["exposure", "--data-dir", str(trek4.data_dir), "--key-file", str(new)],
                                  catch_exceptions=False)
    assert "Its checklist" not in same_key.stderr  # the key the database is under now: nothing to point at


def test_incident_with_rotate_jwt_secret_ticks_off_the_session_secret(trek4: TrekCopy, tmp_path: Path) -> None:
    """The checklist still said to replace .jwt_secret that the same run had just replaced."""
    (trek4.data_dir / ".jwt_secret").write_text("a session secret of the incident tests\n")
    base = ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--incident"]
    rotated = CliRunner().invoke(main, [*base, "--new-key-out", str(tmp_path / "new.key"), "--rotate-jwt-secret"],
                                 catch_exceptions=False)
    assert rotated.exit_code == 0, rotated.stderr
    line = next(x for x in rotated.stdout.splitlines() if "session-signing secret" in x)
    assert line.lstrip().startswith("[x]") and "done by this run (--rotate-jwt-secret)" in line
    assert "keyrotate rotate-jwt-secret --data-dir" not in rotated.stdout
    without = CliRunner().invoke(main, [*base, "--new-key-out", str(tmp_path / "newer.key")], catch_exceptions=False)
    assert without.exit_code == 0, without.stderr
    line = next(x for x in without.stdout.splitlines() if "session-signing secret" in x)
    assert line.lstrip().startswith("[ ]") and "keyrotate rotate-jwt-secret --data-dir" in line


def test_plaintext_trek_keeps_by_design_is_counted_and_named(trek3: TrekCopy) -> None:
    """TREK 3.0.15 keeps users.unsplash_api_key in plaintext: exposure said 1 plaintext value where audit said 11."""
    plain = [e for e in trek3.manifest if e["scheme"] in ("plain", "legacy-plain")]
    by_design = sum(e["scheme"] == "plain" for e in plain)
    assert by_design == 10 and len(plain) == 11
    runner = CliRunner()
    document = json.loads(runner.invoke(main, ["exposure", "--data-dir", str(trek3.data_dir), "--format", "json"],
                                        catch_exceptions=False).stdout)
    assert document["totals"]["plaintext"] == len(plain) == sum(p["values"] for p in document["plaintext"])
    audit = json.loads(runner.invoke(main, ["audit", "--data-dir", str(trek3.data_dir), "--format", "json"],
                                     catch_exceptions=False).stdout)
    assert sum(f["values"] for f in audit["findings"] if f["kind"] in ("plaintext in this TREK version",
                                                                       "legacy plaintext")) == len(plain)
    text = runner.invoke(main, ["exposure", "--data-dir", str(trek3.data_dir)], catch_exceptions=False).stdout
    assert f"{len(plain)} value(s) in secret locations are stored in PLAINTEXT" in text
    assert f"PLAINTEXT: {by_design} Unsplash access keys in users.unsplash_api_key" in text
    # ... and whose they are, one line per user, as for the secrets the key opens.
    section = text.split("Stored in PLAINTEXT (readable without any key): ")[1].split("\n\n")[0]
    assert section.startswith(f"{len(plain)} value(s)\n")
    with closing(sqlite3.connect(trek3.db)) as conn:
        owners = dict(conn.execute("SELECT id, username FROM users WHERE unsplash_api_key != ''").fetchall())
    assert len(owners) == by_design
    for user_id, name in owners.items():
        assert f"[ ] user {user_id} ({name}): " in section and "Unsplash access key" in section
    for entry in plain:
        assert entry["plaintext"] not in text


def test_csv_carries_the_copies_and_the_plaintext(trek3: TrekCopy) -> None:
    """The CSV, offered for a ticket, said nothing about the copies and plaintext the other formats list."""
    snapshot_path = trek3.data_dir / "travel.db.bak"
    backup_database(trek3.db, snapshot_path)
    args = ["exposure", "--data-dir", str(trek3.data_dir), "--format"]
    document = json.loads(CliRunner().invoke(main, [*args, "json"], catch_exceptions=False).stdout)
    rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(main, [*args, "csv"], catch_exceptions=False).stdout)))
    copies = [r for r in rows if r["group"] == "Not fixed by rotating"]
    assert [r["where"] for r in copies] == [c["path"] for c in document["copies"]] == [str(snapshot_path)]
    assert copies[0]["revoke or reissue at"] == document["copies"][0]["note"]
    plain = [r for r in rows if r["group"] == "Stored in plaintext"]
    assert [r["where"] for r in plain] == [p["location"] for p in document["plaintext"]]
    assert sum(int(r["what"].split()[0]) for r in plain) == document["totals"]["plaintext"] == 11


def test_csv_escapes_what_the_database_controls_and_json_keeps_it_exact(trek4: TrekCopy) -> None:
    """The CSV carried usernames raw: `cat report.csv` ran their escape sequences on the admin's terminal and a
    U+202E reordered the line; a cell starting with = (a table name from the database) ran as a formula in a
    spreadsheet. Now escaped as text and markdown are; the JSON stays exact and ASCII-only."""
    name = "-evil\x1b[2J\x1b]0;pwned\x07\nsecond line \u202eexe.txt"
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("UPDATE users SET username = ? WHERE id = (SELECT min(id) FROM users WHERE maps_api_key "
                     "LIKE 'enc:v1:%')", (name,))
        conn.execute('CREATE TABLE "=1+2" (id INTEGER PRIMARY KEY, "@cmd" TEXT)')
        conn.execute('INSERT INTO "=1+2" ("@cmd") VALUES (?)', (Cipher(trek4.key, Scheme.API).seal(b"stray"),))
        conn.commit()
    args = ["exposure", "--data-dir", str(trek4.data_dir), "--no-copies", "--format"]
    out = CliRunner().invoke(main, [*args, "csv"], catch_exceptions=False).stdout
    assert not [c for c in out if (ord(c) < 0x20 and c != "\n") or c in "\u202e\x7f"]
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(out.splitlines()) == len(rows) + 1  # one line per record: no line break inside a cell
    owners = {row["owner"].split(" (", 1)[1] for row in rows if "evil" in row["owner"]}
    assert owners == {"-evil\\x1b[2J\\x1b]0;pwned\\x07\\nsecond line \\u202eexe.txt)"}
    stray = [row for row in rows if "=1+2" in row["where"]]
    assert [row["where"] for row in stray] == ["'=1+2.@cmd (id=1)"]
    assert not [cell for row in rows for cell in row.values() if cell[:1] in ("=", "+", "-", "@")]
    document = CliRunner().invoke(main, [*args, "json"], catch_exceptions=False).stdout
    assert document.isascii()
    assert name in {secret["owner_name"] for secret in json.loads(document)["secrets"]}
