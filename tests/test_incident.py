"""rotate --incident and exposure as leak response: what they print must be true and usable as printed."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key, create_key_file, generate_key_text

from .conftest import TrekCopy, table_dump


def _key_file(path: Path) -> Path:
    create_key_file(path, generate_key_text())
    return path


def _damage_one_secret(trek: TrekCopy) -> None:
    """One secret under a key nobody has: the rotation refuses with exit 8, nothing written."""
    with closing(sqlite3.connect(trek.db)) as conn, conn:
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id = 2",
                     (Cipher(Key("a third key", "x"), Scheme.API).seal(b"whatever"),))


def _incident(trek: TrekCopy, tmp_path: Path, *extra: str) -> list[str]:
    return ["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(_key_file(tmp_path / "new.key")),
            "--incident", *extra]


def test_a_failed_incident_rotation_with_json_writes_one_json_document(trek4: TrekCopy, tmp_path: Path) -> None:
    """D13: the text checklist used to come first on stdout, before the JSON error document."""
    _damage_one_secret(trek4)
    before = table_dump(trek4.db)
    result = CliRunner().invoke(main, [*_incident(trek4, tmp_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 8
    document = json.loads(result.stdout)  # the whole of stdout, nothing before or after
    assert document["error"]["exit_code"] == 8
    assert document["exposure"]["totals"]["exposed"] == len(trek4.encrypted_entries()) - 1
    assert "Secrets readable" not in result.stdout
    assert table_dump(trek4.db) == before


def test_a_wrong_old_key_prints_no_all_clear(trek4: TrekCopy, tmp_path: Path) -> None:
    """D13: exit 7 used to print "Secrets readable with the suspected key: 0": an all-clear for a failed run."""
    wrong = _key_file(tmp_path / "wrong.key")
    args = [*_incident(trek4, tmp_path), "--old-key-file", str(wrong)]
    text = CliRunner().invoke(main, args, catch_exceptions=False)
    assert text.exit_code == 7
    assert "Secrets readable" not in text.stdout and text.stdout == ""
    assert "No leak checklist" in text.stderr
    as_json = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert as_json.exit_code == 7
    document = json.loads(as_json.stdout)
    assert document["error"]["kind"] == "wrong_key" and "exposure" not in document


def test_a_failed_incident_rotation_heads_its_checklist_as_failed(trek4: TrekCopy, tmp_path: Path) -> None:
    _damage_one_secret(trek4)
    result = CliRunner().invoke(main, _incident(trek4, tmp_path), catch_exceptions=False)
    assert result.exit_code == 8
    first, rest = result.stdout.split("\n", 1)
    assert first.startswith("ROTATION FAILED (exit 8): nothing was rotated")
    assert f"Secrets readable with the suspected key: {len(trek4.encrypted_entries()) - 1} (" in rest
