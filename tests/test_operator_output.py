"""What the operator reads: --quiet, key labels, the demo's counts, help texts, advice after a failure."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keyrotate.cli.app import main
from keyrotate.errors import ExitCode
from keyrotate.rotation import after_commit
from keyrotate.rotation.failures import FAILURE_EXAMPLES
from keyrotate.rotation.stored import Batch, StoredDigest
from keyrotate.rotation.tallies import FAILURE_DETAIL_LIMIT
from keyrotate.trek.formats import Scheme
from keyrotate.trek.keys import Key, create_key_file, generate_key_text
from keyrotate.trek.sample import build_sample_database

from .conftest import TrekCopy, listing
from .test_lifecycle import run_keyrotate
from .trek_text import encrypt_text


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_quiet_rotation_prints_nothing_but_errors(trek4: TrekCopy, tmp_path: Path) -> None:
    new = tmp_path / "new.key"
    create_key_file(new, generate_key_text())
    new.chmod(0o644)  # a key file others can read: a warning without --quiet
    args = ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new)]

    quiet = run_keyrotate([*args, "--quiet"])

    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    wrong = tmp_path / "wrong.key"
    create_key_file(wrong, generate_key_text())
    wrong.chmod(0o644)
    other = tmp_path / "other.key"
    create_key_file(other, generate_key_text())
    failing = run_keyrotate(["rotate", "--db", str(trek4.db), "--old-key-file", str(wrong), "--new-key-file",
                             str(other), "--quiet"])  # a wrong old key: the error still shows
    assert failing.returncode == ExitCode.WRONG_KEY
    assert failing.stderr.startswith("Error: ")
    assert "WARNING" not in failing.stderr


def test_rotation_without_quiet_still_warns(trek4: TrekCopy, tmp_path: Path) -> None:
    new = tmp_path / "new.key"
    create_key_file(new, generate_key_text())
    new.chmod(0o644)
    loud = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new)])
    assert loud.returncode == 0, loud.stderr
    assert "WARNING: Key file" in loud.stderr and "Writing now" in loud.stderr


def test_verify_after_a_rotation_names_the_key_trek_uses(trek4: TrekCopy, new_key_file: Path) -> None:
    rotated = invoke(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file)])
    assert rotated.exit_code == 0, rotated.output

    result = invoke(["verify", "--data-dir", str(trek4.data_dir)])

    assert result.exit_code == 0, result.output
    assert "old key" not in result.output
    assert f"OK: the first key (the key TREK uses from {trek4.data_dir}) opens all" in result.output


class _PhantomDigest(StoredDigest):
    """Test-side fault: the read-back check sees one value more than was written."""

    def add_values(self, label: str, batch: Batch, updates: Sequence[tuple[str, int]]) -> None:
        super().add_values(label, [*batch, (2**62, "phantom")], updates)


@pytest.mark.parametrize("allow_running", [False, True])
def test_failed_check_after_commit_says_what_a_restore_would_lose(
    trek4: TrekCopy, new_key_file: Path, monkeypatch: pytest.MonkeyPatch, allow_running: bool
) -> None:
    monkeypatch.setattr(after_commit, "StoredDigest", _PhantomDigest)
    args = ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file)]

    result = invoke([*args, "--allow-running"] if allow_running else args)

    assert result.exit_code == ExitCode.VERIFY_FAILED, result.output
    assert "Restore the backup with: cat " in result.output or "knowing those writes are lost: cat " in result.output
    if allow_running:
        assert "would discard everything written since it was taken" in result.output
        assert "run the same command again without --allow-running" in result.output
    else:
        assert "discard" not in result.output


def test_demo_counts_the_database_once() -> None:
    result = invoke(["demo"])
    assert result.exit_code == 0, result.stderr
    intro = re.search(r"with (\d+) encrypted secrets .*\((\d+) where TREK keeps them, (\d+) found elsewhere", result.stderr)
    assert intro is not None, result.stderr
    total, catalogued, elsewhere = map(int, intro.groups())
    assert total == catalogued + elsewhere
    assert "+ encrypted" not in result.stderr
    assert set(map(int, re.findall(r"opens all (\d+) catalogued secrets", result.stderr))) == {catalogued}
    assert set(map(int, re.findall(r"(\d+) secrets (?:would be|were) re-encrypted", result.stderr))) == {total}


def test_dry_run_help_says_what_it_writes_and_writes_only_that(trek4: TrekCopy, tmp_path: Path) -> None:
    help_text = "".join(invoke(["rotate", "--help"]).stdout.split())  # click wraps inside option names
    assert "Nothingiswritten" not in help_text
    assert "Only--generate-new-keystillsavesthenewkeyto--new-key-out" in help_text
    before = listing(trek4.data_dir)
    key_out = tmp_path / "keys" / "new.key"
    key_out.parent.mkdir()

    result = invoke(["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out", str(key_out),
                     "--dry-run"])

    assert result.exit_code == 0, result.output
    assert listing(trek4.data_dir) == before
    assert listing(key_out.parent) == {"new.key"}


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        ("audit", {0, 1, 2, 3, 4, 5, 10, 12, 141}),  # 141: any command whose reader goes away (`| head`)
        ("exposure", {0, 1, 2, 3, 4, 5, 6, 10, 12, 141}),
        ("backups", {0, 1, 2, 3, 6, 12, 141}),
        ("rekey-backup", {0, 1, 2, 3, 6, 8, 12, 13, 141}),
    ],
)
def test_each_operations_command_documents_its_own_exit_codes(command: str, codes: set[int]) -> None:
    help_text = invoke([command, "--help"]).stdout
    table = help_text[help_text.index("Exit codes:"):]
    assert {int(code) for code in re.findall(r"^\s+(\d+)  ", table, flags=re.MULTILINE)} == codes


def test_a_wrong_key_is_summarised_per_location_with_true_counts(tmp_path: Path) -> None:
    db = tmp_path / "travel.db"
    build_sample_database(db, Key("the key the database is under, 32+ chars", "sample key"), users=300, seed=3)
    wrong = tmp_path / "wrong.key"
    create_key_file(wrong, generate_key_text())
    args = ["verify", "--db", str(db), "--key-file", str(wrong)]
    counts = {loc["label"]: loc["unopened"] for loc in json.loads(invoke([*args, "--json"]).stdout)["locations"]
              if loc["blocking"] and loc["unopened"]}
    assert max(counts.values()) > FAILURE_DETAIL_LIMIT  # beyond what the report lists one by one

    text = invoke(args).stderr

    lines = [line for line in text.splitlines() if "NO KEY:" in line]
    assert len(lines) == len(counts)  # one line per location, not one per value
    for label, count in counts.items():
        [line] = [line for line in lines if line.startswith(f"  NO KEY: {label}")]
        if count == 1:
            assert f"{label} (" in line
        else:
            assert f"{label}: {count} values: opens under none of the keys (for example (" in line
            assert line.count("(id=") <= FAILURE_EXAMPLES


def test_undecryptable_refusal_is_summarised_too(tmp_path: Path) -> None:
    db = tmp_path / "travel.db"
    old = Key("the key most of the database is under", "sample key")
    build_sample_database(db, old, users=300, seed=3)
    with closing(sqlite3.connect(db)) as conn:  # re-encrypt one column under a key nobody has
        lost = Key("a key nobody has any more", "lost key")
        rows = conn.execute("SELECT id, maps_api_key FROM users WHERE maps_api_key LIKE 'enc:v1:%'").fetchall()
        conn.executemany("UPDATE users SET maps_api_key = ? WHERE id = ?",
                         [(encrypt_text(f"plain-{rowid}", lost, Scheme.API), rowid) for rowid, _ in rows])
        conn.commit()
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    create_key_file(old_file, old.reveal())
    create_key_file(new_file, generate_key_text())

    result = invoke(["rotate", "--db", str(db), "--old-key-file", str(old_file), "--new-key-file", str(new_file)])

    assert result.exit_code == ExitCode.UNDECRYPTABLE
    assert f"  - users.maps_api_key: {len(rows)} values: opens under none of the keys (for example (id=" in result.stderr
    assert result.stderr.count("users.maps_api_key") == 1


HOSTILE = "eve\r\x1b[2K\nadmin\u2028\u202eevil\x07"


def _no_raw_controls(text: str) -> None:
    assert not set(text) & {"\r", "\x1b", "\u2028", "\u202e", "\x07"}, repr(text)


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_control_characters_in_usernames_are_escaped_in_reports(trek4: TrekCopy, fmt: str) -> None:
    with closing(sqlite3.connect(trek4.db)) as conn:
        owner = conn.execute("SELECT user_id FROM plugin_oauth_tokens ORDER BY user_id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE users SET username = ? WHERE id = ?", (HOSTILE, owner))
        conn.commit()
    plain = invoke(["exposure", "--data-dir", str(trek4.data_dir), "--format", fmt, "--no-copies"]).stdout
    _no_raw_controls(plain)
    assert "eve\\r\\x1b[2K\\nadmin\\u2028\\u202eevil\\x07" in plain
    assert len(plain.splitlines()) == len(invoke(
        ["exposure", "--data-dir", str(trek4.data_dir), "--format", fmt, "--no-copies"]).stdout.splitlines())


def test_control_characters_in_names_found_by_the_search_are_escaped(trek4: TrekCopy) -> None:
    table = "notes\rFAKE OK line\x1b[1A"
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute(f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY, body TEXT)')
        conn.execute(f'INSERT INTO "{table}" (body) VALUES (?)', ("enc:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",))
        conn.commit()
    result = invoke(["verify", "--data-dir", str(trek4.data_dir)])
    _no_raw_controls(result.stderr)
    assert "notes\\rFAKE OK line\\x1b[1A" in result.stderr
