"""Old keys given with --data-dir add to the key TREK uses there (audit G, defect 3); an old key typed with whitespace
or a BOM at either end is named on exit 7 (audit H, defect 9). Real databases, real crypto, real CLI processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.rotation.verify import verify_database
from keyrotate.trek.formats import Scheme
from keyrotate.trek.keys import Key, create_key_file

from .crashkit import NEW_TEXT, OLD_TEXT, Scenario, environment, make_scenario
from .test_interrupts import KEY_PROMPTS, needs_a_terminal, on_a_terminal
from .trek_text import encrypt_text
from .ziphelpers import build_backup_zip

THIRD_TEXT = "left-behind-by-treks-own-script-0123456789"


def keyrotate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keyrotate", *args], env={**environment(), **env},
                          capture_output=True, text=True, timeout=120, check=False)


def half_rotated(tmp_path: Path) -> tuple[Scenario, Path, int]:
    """TREK's own script moved everything to the key in .encryption_key but users.maps_api_key, left under a
    third key (saved to a file): the scenario, that file, and how many values stayed behind."""
    scenario = make_scenario(tmp_path, users=12)
    third = Key(THIRD_TEXT, "third")
    behind = [s for s in scenario.secrets if (s["table"], s["column"]) == ("users", "maps_api_key")]
    with closing(sqlite3.connect(scenario.db)) as conn, conn:
        for secret in behind:
            conn.execute("UPDATE users SET maps_api_key = ? WHERE id = ?",
                         (encrypt_text(secret["plaintext"], third, Scheme.API), secret["key"]["id"]))
    third_file = tmp_path / "third.key"
    create_key_file(third_file, THIRD_TEXT + "\n")
    os.chmod(third_file, 0o600)
    assert behind
    return scenario, third_file, len(behind)


def opened(db: Path, key: Key) -> tuple[int, int]:
    """(secrets ``key`` opens, catalogued secrets) in ``db``."""
    report = verify_database(db, [key], busy_timeout=5, workers=0)
    total = sum(sum(loc.opened_by) + loc.unopened for loc in report.locations if loc.catalogued)
    return report.opened_by_first, total


def test_the_hint_for_a_second_old_key_runs_as_printed_and_a_rerun_after_it_is_a_no_op(tmp_path: Path) -> None:
    scenario, third_file, behind = half_rotated(tmp_path)
    command = ["rotate", "--data-dir", str(scenario.data_dir), "--new-key-file", str(scenario.new_key_path),
               "--yes", "--no-backup", "--workers", "0"]
    first = keyrotate(*command)
    assert first.returncode == 8, first.stderr
    assert f"{behind} of " in first.stderr and "give it too (--old-key-file may be repeated" in first.stderr
    # As the hint says: the same command, with the other old key given too.
    second = keyrotate(*command, "--old-key-file", str(third_file), "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["totals"]["failed"] == 0 and report["totals"]["already_on_new_key"] == 0
    assert report["key_sources"][0] == f"old key from {scenario.key_file}"  # TREK's key first, then the one given
    assert "third.key" in report["key_sources"][1] and len(report["key_sources"]) == 3
    done, total = opened(scenario.db, scenario.new_key)
    assert done == total > behind
    assert scenario.key_file.read_text().strip() == NEW_TEXT
    # Run again: .encryption_key holds the new key now, which must not count as an old key.
    third = keyrotate(*command, "--old-key-file", str(third_file), "--json")
    assert third.returncode == 0, third.stderr
    again = json.loads(third.stdout)
    assert again["totals"]["rotated"] == 0 and again["totals"]["already_on_new_key"] == report["totals"]["rotated"]
    assert again["totals"]["failed"] == 0
    assert [s for s in again["key_sources"][:-1] if str(scenario.key_file) in s] == []
    assert NEW_TEXT not in first.stderr + second.stderr + second.stdout + third.stderr + third.stdout


def test_rekey_backup_with_data_dir_adds_the_old_key_given_to_those_found_there(tmp_path: Path) -> None:
    scenario, third_file, _ = half_rotated(tmp_path)
    backups = scenario.data_dir / "backups"
    backups.mkdir()
    zip_path = build_backup_zip(scenario.db, backups / "backup-2026-03-14T02-30-00.zip")
    result = keyrotate("rekey-backup", str(zip_path), "--data-dir", str(scenario.data_dir),
                       "--new-key-file", str(scenario.new_key_path), "--old-key-file", str(third_file))
    assert result.returncode == 0, result.stderr + result.stdout
    listing = keyrotate("backups", "--data-dir", str(scenario.data_dir), "--key-file", str(scenario.new_key_path),
                        "--format", "json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["backups"][0]["keys"][0]["opens"] == "all", listing.stdout


def test_verify_with_a_key_file_still_tests_that_key_alone(tmp_path: Path) -> None:
    """--key-file names the key under test: TREK's key is not added to verify's (or exposure's) keys."""
    scenario, third_file, behind = half_rotated(tmp_path)
    result = keyrotate("verify", "--data-dir", str(scenario.data_dir), "--key-file", str(third_file), "--json",
                       "--workers", "0")
    assert result.returncode == 9, result.stderr
    assert json.loads(result.stdout)["key_sources"] == [f"verify key file {third_file}"]


PASTED = {"trailing-space": OLD_TEXT + "  ", "bom": "\ufeff" + OLD_TEXT, "tab": OLD_TEXT + "\t"}


@needs_a_terminal
@pytest.mark.parametrize("typed", PASTED.values(), ids=PASTED.keys())
def test_an_old_key_pasted_at_the_prompt_with_whitespace_is_named_on_exit_7(tmp_path: Path, typed: str) -> None:
    scenario = make_scenario(tmp_path, users=6)
    keys = (typed, NEW_TEXT, NEW_TEXT)
    code, output = on_a_terminal(["rotate", "--db", str(scenario.db), "--quiet", "--no-backup", "--workers", "0"],
                                 [(p, k.encode() + b"\r") for p, k in zip(KEY_PROMPTS, keys, strict=True)])
    assert code == 7, output
    assert "old key typed at the prompt has whitespace or a byte-order mark at its start or end" in output
    total = opened(scenario.db, scenario.old_key)[1]
    assert f"Without it, that key opens {total} of them" in output and "--old-key-file FILE" in output
    assert OLD_TEXT not in output and NEW_TEXT not in output
    assert opened(scenario.db, scenario.old_key) == (total, total)  # nothing was written


def test_an_old_key_env_with_a_trailing_newline_is_named_and_a_wrong_key_is_not(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path, users=6)
    args = ["rotate", "--db", str(scenario.db), "--old-key-env", "OLD", "--new-key-file", str(scenario.new_key_path),
            "--yes", "--no-backup", "--workers", "0"]
    spaced = keyrotate(*args, OLD=OLD_TEXT + "\n")
    assert spaced.returncode == 7, spaced.stderr
    assert "old key from $OLD has whitespace or a byte-order mark" in spaced.stderr
    wrong = keyrotate(*args, OLD="not-the-key-at-all-0123456789abcdef\n")
    assert wrong.returncode == 7, wrong.stderr
    assert "whitespace" not in wrong.stderr
    assert OLD_TEXT not in spaced.stderr + wrong.stderr
