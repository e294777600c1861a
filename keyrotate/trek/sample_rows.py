"""The rows of a sample TREK database: users, settings, albums, photos, plugins, in TREK's mix of secret kinds."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from keyrotate.trek.catalogue import R3_1_0, R3_2_0, R3_2_1, R4, Release
from keyrotate.trek.formats import Scheme
from keyrotate.trek.sample_secrets import SecretWriter

PLUGINS = ("trek-plugin-flighty", "trek-plugin-splitwise")


def insert_app_settings(conn: sqlite3.Connection, w: SecretWriter, shape: Release, schema_version: int) -> None:
    """The ``schema_version`` marker, the app version and the instance-wide secrets."""
    v4 = shape is R4
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (schema_version,))
    conn.execute("INSERT INTO app_settings VALUES ('app_version', ?)", ("4.2.0" if v4 else "3.0.15",))
    for setting in ("oidc_client_secret", "smtp_pass", "admin_webhook_url", "admin_ntfy_token") + (
        ("maps_api_key", "unsplash_api_key", "amap_api_key") if v4 else ()
    ):
        value = w.seal("app_settings", "value", {"key": setting}, w.text(40))
        conn.execute("INSERT INTO app_settings VALUES (?, ?)", (setting, value))


def insert_stray_addon(conn: sqlite3.Connection, w: SecretWriter) -> None:
    """An add-on TREK no longer knows, whose JSON config still holds a token."""
    config = '{{"endpoint":"https://example.org","api_token":"{}"}}'.format(w.seal(
        "addons", "config", {"id": "legacy-addon"}, w.text(24), json_path=("api_token",)))
    conn.execute("INSERT INTO addons VALUES ('legacy-addon', 'Legacy add-on', ?)", (config,))


def newer_locations(conn: sqlite3.Connection, w: SecretWriter, shape: Release, users: int) -> None:
    """One value in each 3.1-4.x location of TREK-FORMAT.md section 4 that ``shape`` has (written last, so
    the random data before them is what older versions of this builder made)."""
    defaults = [("default_user_setting_mapbox_access_token", R3_1_0), ("default_user_setting_llm_api_key", R3_2_0),
                ("default_user_setting_llm_gateway_token", R4)]
    for setting, since in defaults:
        if shape >= since:
            value = w.seal("app_settings", "value", {"key": setting}, w.text(36))
            conn.execute("INSERT INTO app_settings VALUES (?, ?)", (setting, value))
    if shape >= R3_2_0:
        ident = {"id": "llm_parsing"}
        fields = ["apiKey"] + (["gatewayToken"] if shape >= R4 else [])
        sealed = {name: w.seal("addons", "config", ident, w.text(40), json_path=(name,)) for name in fields}
        config = '{"enabled":true,"provider":"openai",' + ",".join(f'"{k}":"{v}"' for k, v in sealed.items()) + "}"
        conn.execute("INSERT INTO addons VALUES ('llm_parsing', 'LLM parsing', ?)", (config,))
    if users < 1:
        return
    per_user = [("llm_api_key", R3_2_0), ("llm_gateway_token", R4), ("carto_api_key", R4)]
    for setting, since in per_user:
        taken = conn.execute("SELECT 1 FROM settings WHERE user_id = 1 AND key = ?", (setting,)).fetchone()
        if shape >= since and taken is None:
            value = w.seal("settings", "value", {"user_id": 1, "key": setting}, w.text(32))
            conn.execute("INSERT INTO settings (user_id, key, value) VALUES (1, ?, ?)", (setting, value))


def user_rows(w: SecretWriter, ids: range, shape: Release) -> Iterator[tuple[Any, ...]]:
    for uid in ids:
        key = {"id": uid}
        unsplash = None
        if w.rng.random() < 0.4:
            # Plaintext in every shape: before 3.2.1 TREK reads it that way; from 3.2.1 on it is a legacy leftover.
            unsplash = w.text(43)
            w.note("users", "unsplash_api_key", key, unsplash, "legacy-plain" if shape >= R3_2_1 else "plain")
        mfa = w.maybe(0.4, "users", "mfa_secret", key, 32, Scheme.MFA)
        synology = w.rng.random() < 0.28
        row = [
            uid, f"user{uid}", f"user{uid}@example.org", "$2b$12$" + "x" * 53,
            w.maybe(0.76, "users", "maps_api_key", key, 39), unsplash,
            w.maybe(0.44, "users", "openweather_api_key", key, 32),
            1 if mfa else 0, mfa,
            w.maybe(0.32, "users", "immich_api_key", key, 43),
            w.seal("users", "synology_password", key, w.text(16)) if synology else None,
            w.seal("users", "synology_sid", key, w.text(30)) if synology else None,
            w.seal("users", "synology_did", key, w.text(30)) if synology else None,
        ]
        if shape >= R4:
            row += [w.maybe(0.24, "users", "amap_api_key", key, 32), w.maybe(0.28, "users", "airtrail_api_key", key, 40)]
        elif shape >= R3_1_0:
            row += [w.maybe(0.28, "users", "airtrail_api_key", key, 40)]
        yield tuple(row)


def setting_rows(w: SecretWriter, ids: range, shape: Release) -> Iterator[tuple[Any, ...]]:
    rates = {"webhook_url": 0.4, "ntfy_token": 0.28, "mapbox_access_token": 0.36}
    if shape >= R4:
        rates |= {"carto_api_key": 0.36, "llm_api_key": 0.28}
    elif shape >= R3_2_0:
        rates |= {"llm_api_key": 0.28}
    for uid in ids:
        yield uid, "dark_mode", "true"
        for setting, rate in rates.items():
            key = {"user_id": uid, "key": setting}
            if w.rng.random() < rate:
                plaintext = ("https://hooks.example.org/" + w.text(24)) if setting == "webhook_url" else w.text(32)
                yield uid, setting, w.seal("settings", "value", key, plaintext)


def album_rows(w: SecretWriter, users: int) -> Iterator[tuple[Any, ...]]:
    for album in range(1, max(1, users // 2) + 1):
        owner = w.rng.randint(1, max(users, 1))
        passphrase = w.maybe(0.35, "trip_album_links", "passphrase", {"id": album}, 12)
        yield owner, owner, f"album-{album}", passphrase


def photo_rows(w: SecretWriter, ids: range, users: int) -> Iterator[tuple[Any, ...]]:
    for pid in ids:
        yield pid, f"asset-{pid}", w.rng.randint(1, max(users, 1)), w.maybe(0.73, "trek_photos", "passphrase", {"id": pid}, 12)


def insert_plugins(conn: sqlite3.Connection, w: SecretWriter) -> None:
    for plugin in PLUGINS:
        fields = [("oauth_client_id", 1, "instance"), ("oauth_client_secret", 1, "instance"),
                  ("oauth_token_url", 0, "instance"), ("personal_api_token", 1, "user")]
        conn.executemany("INSERT INTO plugin_settings_fields (plugin_id, field_key, secret, scope) VALUES (?, ?, ?, ?)",
                         [(plugin, *f) for f in fields])
        cid = w.seal("plugins", "config", {"id": plugin}, w.text(20), json_path=("oauth_client_id",))
        secret = w.seal("plugins", "config", {"id": plugin}, w.text(44), json_path=("oauth_client_secret",))
        config = (f'{{"oauth_token_url":"https://auth.example.org/token","oauth_client_id":"{cid}",'
                  f'"oauth_client_secret":"{secret}","note":"plain text stays"}}')
        conn.execute("INSERT INTO plugins VALUES (?, ?, ?)", (plugin, plugin.title(), config))


def insert_plugin_users(conn: sqlite3.Connection, w: SecretWriter, users: Iterable[int]) -> None:
    configs: list[tuple[str, int, str]] = []
    tokens: list[tuple[str, int, str, str | None]] = []
    for uid in users:
        plugin = w.rng.choice(PLUGINS)
        ident = {"plugin_id": plugin, "user_id": uid}
        token = w.seal("plugin_user_config", "config", ident, w.text(30), json_path=("personal_api_token",))
        configs.append((plugin, uid, f'{{"personal_api_token":"{token}","units":"metric"}}'))
        access = w.seal("plugin_oauth_tokens", "access_token", ident, w.text(40))
        refresh = w.maybe(0.8, "plugin_oauth_tokens", "refresh_token", ident, 40)
        tokens.append((plugin, uid, access, refresh))
    conn.executemany("INSERT INTO plugin_user_config (plugin_id, user_id, config) VALUES (?, ?, ?)", configs)
    conn.executemany("INSERT INTO plugin_oauth_tokens VALUES (?, ?, ?, ?)", tokens)
