"""TREK versions and locations (issue 12): version gates from schema_version, the 3.1-4.x locations,
well-formed tokens that open under no key, and enc:v1: values discovery cannot rewrite (issue 8 section 6).

Every database here is built by keyrotate's own sample builder with that release's schema marker and tables.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from keyrotate.cli.summaries import render_verify
from keyrotate.errors import UndecryptableError
from keyrotate.operations.audit import UNKNOWN, audit_database
from keyrotate.operations.exposure import find_exposure
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.verify import verify_database
from keyrotate.store.database import connect
from keyrotate.trek.catalogue import CATALOGUE, Presence, resolve_catalogue
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key
from keyrotate.trek.sample import SampleDatabase, build_sample_database
from keyrotate.trek.sample_secrets import SampleSecret
from keyrotate.trek.schema import inspect_database

from .trek_text import decrypt_text

OLD = Key("the old key of the compat tests", "old test key")
NEW = Key("the new key of the compat tests", "new test key")
LOST = Key("a key nobody has any more", "lost key")

# TREK-FORMAT.md section 4, row by row: (label in the catalogue, first release that has it).
SECTION_4 = {
    "users.maps_api_key": "3.0.15", "users.openweather_api_key": "3.0.15", "users.immich_api_key": "3.0.15",
    "users.synology_password": "3.0.15", "users.synology_sid": "3.0.15", "users.synology_did": "3.0.15",
    "users.mfa_secret": "3.0.15", "users.unsplash_api_key": "3.0.15", "users.airtrail_api_key": "3.1.0",
    "users.amap_api_key": "4.x",
    "settings.value[webhook_url]": "3.0.15", "settings.value[ntfy_token]": "3.0.15",
    "settings.value[mapbox_access_token]": "3.0.15", "settings.value[llm_api_key]": "3.2.0",
    "settings.value[llm_gateway_token]": "4.x", "settings.value[carto_api_key]": "4.x",
    "app_settings.value[oidc_client_secret]": "3.0.15", "app_settings.value[smtp_pass]": "3.0.15",
    "app_settings.value[admin_webhook_url]": "3.0.15", "app_settings.value[admin_ntfy_token]": "3.0.15",
    "app_settings.value[default_user_setting_mapbox_access_token]": "3.1.0",
    "app_settings.value[default_user_setting_llm_api_key]": "3.2.0",
    "app_settings.value[default_user_setting_llm_gateway_token]": "4.x",
    "app_settings.value[maps_api_key]": "4.x", "app_settings.value[unsplash_api_key]": "4.x",
    "app_settings.value[amap_api_key]": "4.x",
    "app_settings.value[storage.backends] s3 secretAccessKey": "4.x",
    "addons.config[llm_parsing] $.apiKey, $.gatewayToken": "3.2.0",
    "trip_album_links.passphrase": "3.0.15", "trek_photos.passphrase": "3.0.15",
    "plugins.config secret fields": "3.2.0", "plugin_user_config.config secret fields": "3.3.0",
    "plugin_oauth_tokens.access_token": "3.3.0", "plugin_oauth_tokens.refresh_token": "3.3.0",
}
NEWER = ("default_user_setting_", "llm_", "carto_api_key", "airtrail_api_key")


def build(tmp_path: Path, release: str, *, schema_version: int | None = None, users: int = 6) -> SampleDatabase:
    return build_sample_database(tmp_path / f"trek-{release}.db", OLD, users=users, seed=12, release=release,
                                 schema_version=schema_version)


def rotate(db: Path, **kwargs: Any) -> Any:
    return rotate_database(RotateOptions(db, (OLD,), NEW, None, workers=0, **kwargs))


def stored(db: Path, secret: SampleSecret) -> Any:
    where = " AND ".join(f'"{k}" = ?' for k in secret.key)
    with closing(sqlite3.connect(db)) as conn:
        value = conn.execute(f'SELECT "{secret.column}" FROM "{secret.table}" WHERE {where}',
                             tuple(secret.key.values())).fetchone()[0]
    for step in secret.json_path or ():
        value = json.loads(value)[step]
    return value


def is_newer(secret: SampleSecret) -> bool:
    return secret.table == "addons" and secret.key == {"id": "llm_parsing"} or any(
        part in str(secret.key.get("key", "")) or part == secret.column for part in NEWER)


def test_every_section_4_location_is_catalogued_with_its_release() -> None:
    catalogue = {loc.label: loc for loc in CATALOGUE}
    for label, release in SECTION_4.items():
        assert label in catalogue, label
        assert catalogue[label].since.name == release, label
        assert catalogue[label].what and catalogue[label].revoke_hint, label


# (release, its marker, the release before it, the table or column that also proves it; None: marker only)
BOUNDARIES = [
    ("3.0.15", 129, "older than 3.0.15", None),
    ("3.0.22", 131, "3.0.15", None),
    ("3.1.0", 138, "3.0.22", "users.airtrail_api_key"),
    ("3.2.0", 160, "3.1.0", "plugins"),
    ("3.2.1", 164, "3.2.0", None),  # identical tables: only the marker decides users.unsplash_api_key
    ("3.3.0", 171, "3.2.1", "plugin_user_config"),
    ("3.4.0", 175, "3.3.0", None),
]


def version_of(db: Path, marker: int | None = None) -> Any:
    with closing(connect(db)) as conn:
        if marker is not None:
            conn.execute("UPDATE schema_version SET version = ?", (marker,))
            conn.commit()
        return inspect_database(conn, db)


@pytest.mark.parametrize(("release", "marker", "before", "tables"), BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
def test_version_boundary(tmp_path: Path, release: str, marker: int, before: str, tables: str | None) -> None:
    sample = build(tmp_path, release)
    report = verify_database(sample.path, [OLD], workers=0)
    assert report.trek_version == f"TREK {release} or later (schema_version {marker})"
    assert report.trek_version in render_verify(report)
    assert report.ok and report.catalogued_tokens == sample.count
    # The tables of the release before, with this marker and with one migration fewer.
    older = build_sample_database(tmp_path / "older.db", OLD, users=3, release=before.split()[-1],
                                  schema_version=marker)
    assert version_of(older.path).version.at_least.name == release
    below = version_of(older.path, marker - 1)
    assert below.version.evidence.startswith(f"TREK {before}")
    if tables is not None:  # this release's own tables say it, whatever the marker
        assert version_of(sample.path, marker - 1).version.evidence.startswith(f"TREK {release} or later ({tables}")
    for info in (version_of(sample.path, marker), below):
        presence = {r.location.label: r.presence for r in resolve_catalogue(info.schema, info.version)}
        encrypted = info.version.at_least.name not in ("3.0.15", "3.0.22", "3.1.0", "3.2.0")
        assert presence["users.unsplash_api_key"] is (
            Presence.ACTIVE if encrypted else Presence.PLAINTEXT_IN_THIS_VERSION)


@pytest.mark.parametrize(("release", "encrypted"), [("3.1.0", False), ("3.2.0", False), ("3.2.1", True)])
def test_unsplash_plaintext_stays_before_3_2_1(tmp_path: Path, release: str, encrypted: bool) -> None:
    sample = build(tmp_path, release, users=10)
    plain = [s for s in sample.secrets if s.column == "unsplash_api_key"]
    assert plain
    report = rotate(sample.path, encrypt_plaintext=True)
    assert report.committed
    for secret in plain:
        value = stored(sample.path, secret)
        if encrypted:
            assert decrypt_text(value, NEW, Scheme.API) == secret.plaintext
        else:
            assert value == secret.plaintext


def test_fork_marker_above_175_is_not_4x_but_4x_tables_are(tmp_path: Path) -> None:
    fork = build(tmp_path, "3.4.0", schema_version=999)
    assert verify_database(fork.path, [OLD], workers=0).trek_version.startswith("TREK 3.4.0 or later")
    v4 = build(tmp_path, "4.x", schema_version=129)
    assert verify_database(v4.path, [OLD], workers=0).trek_version.startswith(
        "TREK 4.x or later (users.amap_api_key present; schema_version 129)")
    # A newer table than the marker says wins too.
    low = build(tmp_path, "3.3.0", schema_version=129)
    assert verify_database(low.path, [OLD], workers=0).trek_version.startswith(
        "TREK 3.3.0 or later (plugin_user_config present")


def test_newer_locations_rotate_read_back_and_are_named_by_exposure(tmp_path: Path) -> None:
    sample = build(tmp_path, "4.x")
    newer = [s for s in sample.secrets if is_newer(s) and s.scheme == "api"]
    kinds = {(s.table, s.key.get("key") or s.key.get("id"), (s.json_path or ("",))[0]) for s in newer}
    assert {("app_settings", "default_user_setting_mapbox_access_token", ""),
            ("app_settings", "default_user_setting_llm_api_key", ""),
            ("app_settings", "default_user_setting_llm_gateway_token", ""),
            ("addons", "llm_parsing", "apiKey"), ("addons", "llm_parsing", "gatewayToken"),
            ("settings", "llm_api_key", ""), ("settings", "llm_gateway_token", ""),
            ("settings", "carto_api_key", "")} <= kinds
    exposure = find_exposure(sample.path, [OLD], check_copies=False)
    described = {(s.table, s.where): s for s in exposure.secrets}
    for secret in newer:
        match = [s for (table, where), s in described.items() if table == secret.table
                 and all(f"{k}={v}" in where for k, v in secret.key.items())]
        assert match, secret
        assert not any("unknown" in s.what for s in match), [s.what for s in match]
        catalogued = {(loc.what, loc.revoke_hint) for loc in CATALOGUE if loc.table == secret.table}
        assert all((s.what, s.action) in catalogued for s in match), [(s.what, s.action) for s in match]
    report = rotate(sample.path)
    assert report.committed and report.outside_catalogue == 1  # only the legacy add-on's stray token
    for secret in sample.secrets:
        if secret.scheme in ("api", "mfa"):
            scheme = Scheme.MFA if secret.scheme == "mfa" else Scheme.API
            assert decrypt_text(stored(sample.path, secret), NEW, scheme) == secret.plaintext, secret


def test_audit_and_encrypt_plaintext_see_the_newer_locations(tmp_path: Path) -> None:
    sample = build(tmp_path, "3.2.0")
    with closing(sqlite3.connect(sample.path)) as conn:
        conn.execute("UPDATE app_settings SET value = 'sk-plain-default' WHERE key = 'default_user_setting_llm_api_key'")
        conn.execute("""UPDATE addons SET config = '{"enabled":true,"apiKey":"sk-plain-addon"}' WHERE id = 'llm_parsing'""")
        conn.commit()
    found = {(f.kind, f.location): f.values for f in audit_database(sample.path).findings}
    assert found[("legacy plaintext", "app_settings.value[default_user_setting_llm_api_key]")] == 1
    assert found[("legacy plaintext", "addons.config[llm_parsing] $.apiKey, $.gatewayToken")] == 1
    report = rotate(sample.path, encrypt_plaintext=True)
    assert report.committed
    with closing(sqlite3.connect(sample.path)) as conn:
        default = conn.execute("SELECT value FROM app_settings WHERE key = 'default_user_setting_llm_api_key'").fetchone()[0]
        addon = json.loads(conn.execute("SELECT config FROM addons WHERE id = 'llm_parsing'").fetchone()[0])
    assert decrypt_text(default, NEW, Scheme.API) == "sk-plain-default"
    assert decrypt_text(addon["apiKey"], NEW, Scheme.API) == "sk-plain-addon"
    assert not any(f.kind == "legacy plaintext" for f in audit_database(sample.path).findings
                   if f.location != "users.unsplash_api_key")


@pytest.mark.parametrize("where", ["whole value", "json string"])
def test_well_formed_token_under_a_lost_key_blocks_outside_the_catalogue(tmp_path: Path, where: str) -> None:
    sample = build(tmp_path, "4.x")
    lost = Cipher(LOST, Scheme.API).seal(b"secret under a lost key")
    value = lost if where == "whole value" else json.dumps({"service": {"token": lost}})
    with closing(sqlite3.connect(sample.path)) as conn:
        conn.execute("UPDATE trips SET description = ? WHERE id = 3", (value,))
        conn.commit()
    with pytest.raises(UndecryptableError) as caught:
        rotate(sample.path)
    message = str(caught.value)
    assert caught.value.exit_code == 8
    assert "trips.description" in message and "id=3" in message
    if where == "json string":
        assert "$.service.token" in message
    assert "enc:v1:not-a-real-token" not in message  # the note in trip 1 still does not block
    assert verify_database(sample.path, [OLD], workers=0).ok is False
    report = rotate(sample.path, skip_undecryptable=True)
    assert report.committed
    with closing(sqlite3.connect(sample.path)) as conn:
        assert conn.execute("SELECT description FROM trips WHERE id = 3").fetchone()[0] == value
    after = verify_database(sample.path, [NEW], workers=0)
    assert not after.ok and any(f.table == "trips" for f in after.failures)


@pytest.mark.parametrize("kind", ["without rowid", "blob"])
def test_tokens_discovery_cannot_rewrite_block_and_fail_verify(tmp_path: Path, kind: str) -> None:
    """Issue 8 section 6: never left silently under the old key while verify says OK."""
    sample = build(tmp_path, "4.x")
    token = Cipher(OLD, Scheme.API).seal(b"hidden secret")
    with closing(sqlite3.connect(sample.path)) as conn:
        if kind == "without rowid":
            conn.execute("CREATE TABLE sync_state (name TEXT PRIMARY KEY, state TEXT) WITHOUT ROWID")
            conn.execute("INSERT INTO sync_state VALUES ('calendar', ?)", (token,))
            conn.execute("INSERT INTO sync_state VALUES ('note', 'mentions enc:v1:only-a-note')")
        else:
            conn.execute("UPDATE trips SET description = ? WHERE id = 2", (token.encode(),))
        conn.commit()
    table = "sync_state" if kind == "without rowid" else "trips"
    assert verify_database(sample.path, [OLD], workers=0).ok  # under the key TREK uses: fine
    with pytest.raises(UndecryptableError) as caught:
        rotate(sample.path)
    assert table in str(caught.value) and "cannot rewrite" in str(caught.value)
    assert "only-a-note" not in str(caught.value)
    assert rotate(sample.path, skip_undecryptable=True).committed
    after = verify_database(sample.path, [NEW], workers=0)
    assert not after.ok
    assert [f.table for f in after.failures if f.catalogued] == [table]


def test_audit_flags_an_unknown_credential_table_and_names_known_plaintext(tmp_path: Path) -> None:
    sample = build(tmp_path, "4.x")
    with closing(sqlite3.connect(sample.path)) as conn:
        conn.execute("CREATE TABLE calendar_credentials (id INTEGER PRIMARY KEY, user_id INTEGER, value TEXT, "
                     "created_at TEXT)")
        conn.execute("INSERT INTO calendar_credentials VALUES (1, 1, 'caldav-plaintext-password', '2026-01-01')")
        conn.execute("CREATE TABLE webdav_links (id INTEGER PRIMARY KEY, refresh_token TEXT, token_hash TEXT)")
        conn.execute("INSERT INTO webdav_links VALUES (1, 'rt-plaintext', 'abc123hash')")
        conn.execute("INSERT INTO webdav_links VALUES (2, ?, NULL)", (Cipher(OLD, Scheme.API).seal(b"x"),))
        conn.execute("CREATE TABLE share_tokens (id INTEGER PRIMARY KEY, trip_id INTEGER, token TEXT)")
        conn.execute("INSERT INTO share_tokens VALUES (1, 1, 'share-plaintext-token')")
        conn.commit()
    report = audit_database(sample.path)
    found = {(f.kind, f.location): f for f in report.findings}
    assert found[(UNKNOWN, "calendar_credentials.value")].values == 1
    assert found[(UNKNOWN, "webdav_links.refresh_token")].values == 1  # the ciphertext is not counted
    assert not any("token_hash" in loc or "created_at" in loc for _, loc in found)
    share = found[("not encrypted by TREK", "share_tokens.token")]
    assert "share link" in share.what
    assert not any(kind == UNKNOWN and loc == "share_tokens.token" for kind, loc in found)
