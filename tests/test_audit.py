"""Plaintext audit against the real fixtures."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.cli.render import FORMATS, render
from keyrotate.operations.audit import audit_database

from .conftest import TrekCopy, table_dump


def counts(report: object) -> dict[tuple[str, str], int]:
    return {(f.kind, f.location): f.values for f in report.findings}  # type: ignore[attr-defined]


def test_trek3_unsplash_stays_plaintext_and_legacy_webhook_is_flagged(trek3: TrekCopy) -> None:
    before = table_dump(trek3.db)
    report = audit_database(trek3.db)
    plain = sum(e["scheme"] == "plain" for e in trek3.manifest)
    legacy = sum(e["scheme"] == "legacy-plain" for e in trek3.manifest)
    assert counts(report) == {
        ("plaintext in this TREK version", "users.unsplash_api_key"): plain,
        ("legacy plaintext", "settings.value[webhook_url]"): legacy,
    }
    fixes = {f.location: f.fix for f in report.findings}
    assert "--encrypt-plaintext" in fixes["settings.value[webhook_url]"]
    assert "TREK 3.2.1 (schema_version 164) and later encrypts it" in fixes["users.unsplash_api_key"]
    assert table_dump(trek3.db) == before


def test_trek4_legacy_plaintext_then_clean_after_encrypting(trek4: TrekCopy, new_key_file: Path) -> None:
    report = audit_database(trek4.db)
    legacy = [e for e in trek4.manifest if e["scheme"] == "legacy-plain"]
    assert sum(f.values for f in report.findings if f.kind == "legacy plaintext") == len(legacy)
    assert legacy  # the fixture does hold legacy plaintext to find
    for fmt in FORMATS:
        text = render(report, fmt)
        for entry in legacy:
            assert entry["plaintext"] not in text
    result = CliRunner().invoke(
        main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file), "--encrypt-plaintext"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert audit_database(trek4.db).clean


def test_uncatalogued_secret_columns_and_settings(trek4: TrekCopy) -> None:
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN dropbox_token TEXT")
        conn.execute("UPDATE users SET dropbox_token = 'sl.dropbox-secret-value' WHERE id IN (2, 3)")
        conn.execute("INSERT INTO app_settings (key, value) VALUES ('sms_gateway_password', 'hunter2-gateway')")
        conn.commit()
    result = CliRunner().invoke(main, ["audit", "--db", str(trek4.db), "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    found = {(f["kind"], f["location"]): f["values"] for f in document["findings"]}
    assert found[("unknown possible plaintext secret", "users.dropbox_token")] == 2
    assert found[("unknown possible plaintext secret", "app_settings.value[sms_gateway_password]")] == 1
    # Flags and hashes are not secrets.
    assert not any("plugin_settings_fields" in loc or "password_hash" in loc for _, loc in found)
    assert "dropbox-secret-value" not in result.output and "hunter2" not in result.output
