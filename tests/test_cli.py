"""Every command through click's CliRunner, reopening the database afterwards."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keyrotate.cli.app import main
from keyrotate.errors import ExitCode
from keyrotate.trek.keys import Key

from .conftest import TrekCopy, copy_fixture, listing, opens_under, table_dump


def invoke(args: list[str], *, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env, input=input, catch_exceptions=False)


def assert_nothing_secret_in(result: Result, trek: TrekCopy, *extra: str) -> None:
    """No key and no manifest plaintext in anything the command printed."""
    printed = result.stdout + result.stderr
    secrets = [trek.key.reveal(), *extra] + [e["plaintext"] for e in trek.manifest]
    leaked = [s for s in secrets if s and s in printed]
    assert leaked == []


def test_rotate_with_data_dir_rotates_writes_key_file_and_backup(trek: TrekCopy, new_key_file: Path) -> None:
    old_key = trek.key
    (trek.data_dir / ".encryption_key").chmod(0o640)  # TREK reading it through its group: the mode is kept
    result = invoke(["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(new_key_file)])
    assert result.exit_code == ExitCode.OK, result.stderr
    new_text = new_key_file.read_text().strip()
    key_file = trek.data_dir / ".encryption_key"
    assert key_file.read_text() == new_text
    assert key_file.stat().st_mode & 0o777 == 0o640
    backups = [p for p in trek.data_dir.iterdir() if ".keyrotate-backup-" in p.name and p.suffix != ".key"]
    assert len(backups) == 1 and backups[0].stat().st_mode & 0o777 == 0o600
    saved = Path(f"{backups[0]}.key")  # the old key, beside the backup it opens
    assert saved.read_text() == old_key.reveal() and saved.stat().st_mode & 0o777 == 0o600
    assert "To restore it and the old key (TREK stopped), run:\n    cat " in result.stderr
    assert "ENCRYPTION_KEY" in result.stderr  # the reminder about TREK's environment
    new_key = Key(new_text, "new")
    with closing(sqlite3.connect(trek.db)) as conn:
        assert all(opens_under(conn, e, new_key) for e in trek.encrypted_entries())
    with closing(sqlite3.connect(backups[0])) as conn:
        assert all(opens_under(conn, e, old_key) for e in trek.encrypted_entries())
    assert_nothing_secret_in(result, trek, new_text)


def test_rotate_dry_run_json_changes_nothing(trek4: TrekCopy, new_key_file: Path) -> None:
    before, files = table_dump(trek4.db), listing(trek4.data_dir)
    result = invoke(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file),
                     "--dry-run", "--json"])
    assert result.exit_code == ExitCode.OK, result.stderr
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1
    assert report["dry_run"] is True and report["committed"] is False
    assert report["totals"]["rotated"] == len(trek4.encrypted_entries())
    assert table_dump(trek4.db) == before
    assert listing(trek4.data_dir) <= files
    assert (trek4.data_dir / ".encryption_key").read_text() == trek4.key.reveal()
    assert_nothing_secret_in(result, trek4, new_key_file.read_text().strip())


def test_rotate_with_wrong_old_key_from_env_exits_7_and_writes_nothing(trek3: TrekCopy, new_key_file: Path) -> None:
    before, files = table_dump(trek3.db), listing(trek3.data_dir)
    result = invoke(["rotate", "--db", str(trek3.db), "--old-key-env", "OLD", "--new-key-file", str(new_key_file)],
                    env={"OLD": "definitely-not-the-key"})
    assert result.exit_code == ExitCode.WRONG_KEY
    assert f"opens 0 of {len(trek3.encrypted_entries())} secrets" in result.stderr
    assert table_dump(trek3.db) == before and listing(trek3.data_dir) == files
    assert_nothing_secret_in(result, trek3, "definitely-not-the-key")


def test_interactive_rotate_asks_and_respects_no(trek4: TrekCopy) -> None:
    before = table_dump(trek4.db)
    typed = f"{trek4.key.reveal()}\nbrand-new-typed-key\nbrand-new-typed-key\nn\n"
    result = invoke(["rotate", "--db", str(trek4.db)], input=typed)
    assert result.exit_code == ExitCode.CANCELLED
    assert "secret(s) to re-encrypt" in result.stderr
    assert re.search(r"^  \S+: \d+ secret\(s\)$", result.stderr, re.MULTILINE)  # the plan, per location
    assert table_dump(trek4.db) == before
    assert not [p for p in trek4.data_dir.iterdir() if "backup" in p.name]
    assert_nothing_secret_in(result, trek4, "brand-new-typed-key")


def test_interactive_rotate_with_yes_answer(trek4: TrekCopy) -> None:
    typed = f"{trek4.key.reveal()}\nbrand-new-typed-key\nbrand-new-typed-key\ny\n"
    result = invoke(["rotate", "--db", str(trek4.db)], input=typed)
    assert result.exit_code == ExitCode.OK, result.stderr
    with closing(sqlite3.connect(trek4.db)) as conn:
        assert all(opens_under(conn, e, Key("brand-new-typed-key", "t")) for e in trek4.encrypted_entries())
    assert_nothing_secret_in(result, trek4, "brand-new-typed-key")


def test_mismatched_new_key_confirmation_is_asked_again(trek4: TrekCopy) -> None:
    typed = f"{trek4.key.reveal()}\nfirst-try\nsecond-try\nnew-key-ok\nnew-key-ok\ny\n"
    result = invoke(["rotate", "--db", str(trek4.db)], input=typed)
    assert result.exit_code == ExitCode.OK, result.stderr
    with closing(sqlite3.connect(trek4.db)) as conn:
        assert all(opens_under(conn, e, Key("new-key-ok", "t")) for e in trek4.encrypted_entries())


def test_no_key_and_nothing_to_read_is_a_usage_error(trek4: TrekCopy) -> None:
    before = table_dump(trek4.db)
    result = invoke(["rotate", "--db", str(trek4.db)], input="")
    assert result.exit_code == ExitCode.USAGE
    assert "--old-key-file" in result.stderr
    assert table_dump(trek4.db) == before


def test_verify_exit_codes_and_json(trek: TrekCopy, new_key_file: Path) -> None:
    before = table_dump(trek.db)
    ok = invoke(["verify", "--data-dir", str(trek.data_dir), "--json"])
    assert ok.exit_code == ExitCode.OK, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True
    assert report["totals"]["catalogued_secrets"] == len(trek.encrypted_entries())
    wrong = invoke(["verify", "--db", str(trek.db), "--key-file", str(new_key_file)])
    assert wrong.exit_code == ExitCode.VERIFY_FAILED
    assert f"opens 0 of {len(trek.encrypted_entries())}" in wrong.stderr
    assert table_dump(trek.db) == before
    assert_nothing_secret_in(ok, trek)
    assert_nothing_secret_in(wrong, trek, new_key_file.read_text().strip())


def test_verify_with_two_keys_counts_the_other_key(trek4: TrekCopy, new_key_file: Path) -> None:
    result = invoke(["verify", "--db", str(trek4.db), "--key-file", str(new_key_file),
                     "--key-file", str(trek4.data_dir / ".encryption_key"), "--json"])
    assert result.exit_code == ExitCode.VERIFY_FAILED
    totals = json.loads(result.stdout)["totals"]
    assert totals["open_under_first_key"] == 0
    assert totals["open_under_other_keys"] == len(trek4.encrypted_entries())


def test_generate_key(tmp_path: Path) -> None:
    printed = invoke(["generate-key"])
    assert printed.exit_code == 0
    text = printed.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", text), "64 lowercase hex digits, like openssl rand -hex 32"
    assert invoke(["generate-key"]).stdout.strip() != text  # random, not a constant
    out = tmp_path / "k"
    written = invoke(["generate-key", "--out", str(out)])
    assert written.exit_code == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert len(out.read_text().strip()) == 64
    assert out.read_text().strip() not in written.stdout + written.stderr
    again = invoke(["generate-key", "--out", str(out)])
    assert again.exit_code == ExitCode.BAD_KEY
    assert "will not overwrite" in again.stderr


def test_demo_runs_the_whole_flow() -> None:
    result = invoke(["demo"])
    assert result.exit_code == 0, result.stderr
    for step in ("Step 1", "Step 2", "Step 3", "Step 4", "Step 5"):
        assert step in result.stderr
    assert "Dry run: nothing was written." in result.stderr
    assert "Committed and verified on a fresh connection." in result.stderr


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda d: d / "missing.db", ExitCode.NOT_FOUND),
        (lambda d: d, ExitCode.NOT_FOUND),
        (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", ExitCode.NOT_A_DATABASE),
        (lambda d: (d / "empty.db").write_bytes(b"") or d / "empty.db", ExitCode.NOT_A_DATABASE),
    ],
)
def test_bad_database_paths(tmp_path: Path, new_key_file: Path, make, code: ExitCode) -> None:  # type: ignore[no-untyped-def]
    target = make(tmp_path)
    result = invoke(["rotate", "--db", str(target), "--old-key-file", str(new_key_file),
                     "--new-key-env", "NEW"], env={"NEW": "another"})
    assert result.exit_code == code, result.stderr
    assert result.stderr.startswith("Error: ")


def test_sqlite_database_that_is_not_trek(tmp_path: Path, new_key_file: Path) -> None:
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)")
    before = other.read_bytes()
    result = invoke(["verify", "--db", str(other), "--key-file", str(new_key_file)])
    assert result.exit_code == ExitCode.NOT_TREK
    assert "not TREK's" in result.stderr
    assert other.read_bytes() == before


def test_db_and_data_dir_together_is_a_usage_error(trek4: TrekCopy) -> None:
    result = invoke(["verify", "--db", str(trek4.db), "--data-dir", str(trek4.data_dir)])
    assert result.exit_code == ExitCode.USAGE


def test_help_teaches_exit_codes() -> None:
    result = invoke(["rotate", "--help"])
    assert result.exit_code == 0
    assert "Exit codes:" in result.stdout and "--dry-run" in result.stdout


@pytest.mark.parametrize("dry_run", [False, True], ids=["rotate", "dry run"])
def test_a_failure_with_json_still_writes_one_json_document(trek4: TrekCopy, new_key_file: Path, dry_run: bool) -> None:
    """A script that asked for --json got an empty stdout on exit 8; the message stays on stderr for people."""
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("UPDATE users SET maps_api_key = 'enc:v1:' || substr(maps_api_key, 9) WHERE id = "
                     "(SELECT min(id) FROM users WHERE maps_api_key LIKE 'enc:v1:%')")  # damaged: opens under no key
        conn.commit()
    before = table_dump(trek4.db)
    result = invoke(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file), "--json",
                     *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == ExitCode.UNDECRYPTABLE, result.stderr
    document = json.loads(result.stdout)
    assert document["schema_version"] == 1 and document["command"] == "rotate"
    assert document["error"]["exit_code"] == 8 and document["error"]["kind"] == "undecryptable"
    assert "users.maps_api_key" in document["error"]["message"] and "Error:" in result.stderr
    assert table_dump(trek4.db) == before


def test_after_skip_undecryptable_the_printed_check_says_what_verify_will_say(tmp_path: Path, new_key_file: Path) -> None:
    """The step said `verify` "must say OK", which it never does while a skipped value is left: it exits 9
    naming that value. The printed command is shell-quoted (a data directory with a space) and runs as printed."""
    trek = copy_fixture("trek-4.2-shape", tmp_path / "my trek")
    with closing(sqlite3.connect(trek.db)) as conn:
        conn.execute("UPDATE users SET maps_api_key = 'enc:v1:' || substr(maps_api_key, 9) WHERE id = "
                     "(SELECT min(id) FROM users WHERE maps_api_key LIKE 'enc:v1:%')")
        conn.commit()
    result = invoke(["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(new_key_file), "--yes",
                     "--skip-undecryptable"])
    assert result.exit_code == 0, result.stderr
    check = next(line for line in result.stderr.splitlines() if line.startswith("Step: Check: `"))
    assert "must name only the 1 value(s) this run left under no key" in check
    command = check.split("`")[1]
    words = shlex.split(command)
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "keyrotate", *words[1:]], capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == ExitCode.VERIFY_FAILED, done.stderr
    assert done.stderr.count("users.maps_api_key") >= 1


def test_verify_with_no_key_to_read_and_an_empty_typed_key_say_so_in_words(trek4: TrekCopy) -> None:
    """They said "No the key given" and "The key from the key typed at the prompt is empty"."""
    nothing = invoke(["verify", "--db", str(trek4.db)], input="")
    assert nothing.exit_code == ExitCode.USAGE
    assert "No key given and none could be read from the prompt" in nothing.stderr
    empty = invoke(["verify", "--db", str(trek4.db)], input="\n")
    assert empty.exit_code == ExitCode.BAD_KEY
    assert "The key (key typed at the prompt) is empty." in empty.stderr


@pytest.mark.parametrize("damage_catalogued", [False, True])
def test_skip_undecryptable_does_not_say_trek_reads_tokens_outside_the_catalogue(
        trek4: TrekCopy, new_key_file: Path, damage_catalogued: bool) -> None:
    """TREK reads a catalogued secret it cannot open as "not set"; the cell outside the catalogue where a stray token
    was found is never read by TREK: the warning said "TREK will read them as 'not set'" of those too."""
    from keyrotate.trek.formats import Cipher, Scheme

    lost = Key("a key nobody has any more", "lost key")
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("CREATE TABLE plugin_notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO plugin_notes (body) VALUES (?)", (Cipher(lost, Scheme.API).seal(b"stray secret"),))
        if damage_catalogued:
            conn.execute("UPDATE users SET maps_api_key = ? WHERE id = (SELECT min(id) FROM users WHERE maps_api_key "
                         "LIKE 'enc:v1:%')", (Cipher(lost, Scheme.API).seal(b"lost secret"),))
        conn.commit()
    result = invoke(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file), "--yes",
                     "--skip-undecryptable"])
    assert result.exit_code == 0, result.stderr
    warning = " ".join(line for line in result.stderr.splitlines() if "LEFT UNTOUCHED" in line)
    assert "1 token(s) outside the catalogue" in warning
    assert "TREK does not read the cells outside the catalogue" in warning
    if damage_catalogued:
        assert "1 catalogued secret(s)" in warning and "TREK will read the catalogued ones as 'not set'" in warning
    else:
        assert "not set" not in warning
