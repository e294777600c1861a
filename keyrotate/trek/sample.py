"""Build TREK-shaped databases with known secrets: for the demo, tests and benchmarks.

The schema holds the tables and columns TREK keeps secrets in (3.x or 4.x shape,
TREK-FORMAT.md section 4) plus a few ordinary ones, and is filled with the mix of
secret kinds seen in real TREK databases. Everything is derived from ``seed``,
so the same arguments give the same database.
"""

from __future__ import annotations

import random
import sqlite3
import string
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyrotate.store.files import write_new_file
from keyrotate.trek.catalogue import MARKED_RELEASES, R3_1_0, R3_2_0, R3_2_1, R3_3_0, R4, Release
from keyrotate.trek.formats import IV_BYTES, Cipher, Scheme
from keyrotate.trek.keys import Key

_V3_SCHEMA = """
CREATE TABLE schema_version (id INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL);
CREATE TABLE users (
  id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE NOT NULL, email TEXT UNIQUE NOT NULL,
  password_hash TEXT NOT NULL, role TEXT NOT NULL DEFAULT 'user', maps_api_key TEXT, unsplash_api_key TEXT,
  openweather_api_key TEXT, mfa_enabled INTEGER DEFAULT 0, mfa_secret TEXT, mfa_backup_codes TEXT,
  immich_url TEXT, synology_url TEXT, synology_username TEXT, synology_password TEXT, synology_sid TEXT,
  immich_api_key TEXT, synology_did TEXT
);
CREATE TABLE settings (
  id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  key TEXT NOT NULL, value TEXT, UNIQUE(user_id, key)
);
CREATE TABLE app_settings (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE trips (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL, title TEXT NOT NULL, description TEXT);
CREATE TABLE trip_album_links (
  id INTEGER PRIMARY KEY AUTOINCREMENT, trip_id INTEGER NOT NULL, user_id INTEGER NOT NULL, provider TEXT NOT NULL,
  album_id TEXT NOT NULL, passphrase TEXT DEFAULT NULL
);
CREATE TABLE trek_photos (
  id INTEGER PRIMARY KEY AUTOINCREMENT, provider TEXT NOT NULL, asset_id TEXT, owner_id INTEGER,
  file_path TEXT, width INTEGER, height INTEGER, passphrase TEXT DEFAULT NULL
);
"""

# What each release adds to the tables above (TREK-FORMAT.md sections 4 and 8), oldest first.
_V3_1_SCHEMA = "ALTER TABLE users ADD COLUMN airtrail_api_key TEXT;"
_V3_2_SCHEMA = """
CREATE TABLE plugins (id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT DEFAULT '{}');
CREATE TABLE plugin_settings_fields (
  id INTEGER PRIMARY KEY AUTOINCREMENT, plugin_id TEXT NOT NULL, field_key TEXT NOT NULL,
  secret INTEGER NOT NULL DEFAULT 0, scope TEXT NOT NULL DEFAULT 'instance', UNIQUE (plugin_id, field_key)
);
CREATE TABLE addons (id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT);
"""
_V3_3_SCHEMA = """
CREATE TABLE plugin_user_config (
  plugin_id TEXT NOT NULL, user_id INTEGER NOT NULL, config TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (plugin_id, user_id)
);
CREATE TABLE plugin_oauth_tokens (
  plugin_id TEXT NOT NULL, user_id INTEGER NOT NULL, access_token TEXT, refresh_token TEXT,
  PRIMARY KEY (plugin_id, user_id)
);
"""
_V4_SCHEMA = "ALTER TABLE users ADD COLUMN amap_api_key TEXT;"
RELEASES: dict[str, Release] = {r.name: r for r in (*MARKED_RELEASES, R4)}

_TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
_UNICODE_SAMPLES = ("🔐🗝️ emoji pass", "旅行の合言葉", "pässwörd ünïcode", "multi\nline secret")
_PLUGINS = ("trek-plugin-flighty", "trek-plugin-splitwise")


@dataclass(frozen=True)
class SampleSecret:
    table: str
    column: str
    key: dict[str, Any]
    scheme: str  # api | mfa | plain | legacy-plain
    plaintext: str
    json_path: tuple[Any, ...] | None = None


@dataclass
class SampleDatabase:
    path: Path
    major: int
    release: Release
    secrets: list[SampleSecret] = field(default_factory=list)
    count: int = 0  # encrypted secrets written, also when ``secrets`` is not kept


class _Writer:
    def __init__(self, key: Key, rng: random.Random, keep: bool) -> None:
        self.api = Cipher(key, Scheme.API)
        self.mfa = Cipher(key, Scheme.MFA)
        self.rng = rng
        self.keep = keep
        self.secrets: list[SampleSecret] = []
        self.count = 0

    def text(self, length: int) -> str:
        if self.rng.random() < 0.01:
            return self.rng.choice(_UNICODE_SAMPLES)
        return "".join(self.rng.choices(_TOKEN_ALPHABET, k=length))

    def seal(self, table: str, column: str, key: dict[str, Any], plaintext: str, *,
             scheme: Scheme = Scheme.API, json_path: tuple[Any, ...] | None = None) -> str:
        cipher = self.api if scheme is Scheme.API else self.mfa
        self.count += 1
        if self.keep:
            self.secrets.append(SampleSecret(table, column, dict(key), scheme.value, plaintext, json_path))
        return cipher.seal(plaintext.encode("utf-8"), iv=self.rng.randbytes(IV_BYTES))

    def note(self, table: str, column: str, key: dict[str, Any], plaintext: str, scheme: str) -> None:
        if self.keep:
            self.secrets.append(SampleSecret(table, column, dict(key), scheme, plaintext))

    def maybe(self, rate: float, table: str, column: str, key: dict[str, Any], length: int,
              scheme: Scheme = Scheme.API) -> str | None:
        if self.rng.random() >= rate:
            return None
        if scheme is Scheme.MFA:
            plaintext = "".join(self.rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", k=32))
        else:
            plaintext = self.text(length)
        return self.seal(table, column, key, plaintext, scheme=scheme)


def build_sample_database(
    path: Path,
    key: Key,
    *,
    users: int = 25,
    photos_per_user: float = 2.4,
    major: int = 4,
    seed: int = 0,
    keep_secrets: bool = True,
    stray_tokens: bool = True,
    plugin_user_share: float = 0.0,
    release: str | None = None,
    schema_version: int | None = None,
) -> SampleDatabase:
    """Create ``path`` (which must not exist) holding a TREK-shaped database under ``key``.

    ``release`` (a name in :data:`RELEASES`) builds that TREK release's tables, with its ``schema_version``
    marker unless ``schema_version`` is given; without it, ``major`` picks 3.0.15 or 4.x (marker 129, as
    the shared fixtures have). ``plugin_user_share`` (3.3.0 and later) gives that share of the users plugin
    tokens and per-user plugin config, as :func:`add_plugin_users` does. With
    ``keep_secrets=False`` nothing but a count is kept, so any size fits in memory.
    """
    if path.exists():
        raise FileExistsError(path)
    shape = RELEASES[release] if release is not None else R4 if major >= 4 else RELEASES["3.0.15"]
    if schema_version is None:
        schema_version = 129 if release is None else shape.schema_version or 175
    major = 4 if shape is R4 else 3
    rng = random.Random(seed)
    writer = _Writer(key, rng, keep_secrets)
    # It holds secrets: mode 0600 from the first byte (SQLite gives the -wal and -shm the same mode).
    write_new_file(path, b"")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_V3_SCHEMA + "".join(
            sql for since, sql in ((R3_1_0, _V3_1_SCHEMA), (R3_2_0, _V3_2_SCHEMA), (R3_3_0, _V3_3_SCHEMA),
                                   (R4, _V4_SCHEMA)) if shape >= since))
        conn.execute("BEGIN")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (schema_version,))
        conn.execute("INSERT INTO app_settings VALUES ('app_version', ?)", ("4.2.0" if major >= 4 else "3.0.15",))
        for setting in ("oidc_client_secret", "smtp_pass", "admin_webhook_url", "admin_ntfy_token") + (
            ("maps_api_key", "unsplash_api_key", "amap_api_key") if major >= 4 else ()
        ):
            value = writer.seal("app_settings", "value", {"key": setting}, writer.text(40))
            conn.execute("INSERT INTO app_settings VALUES (?, ?)", (setting, value))
        if shape >= R3_2_0:
            _plugins(conn, writer)
        for start in range(0, users, 1000):
            conn.executemany(_user_sql(shape), _users(writer, range(start + 1, min(users, start + 1000) + 1), shape))
            conn.executemany("INSERT INTO settings (user_id, key, value) VALUES (?, ?, ?)",
                             _settings(writer, range(start + 1, min(users, start + 1000) + 1), shape))
        conn.executemany(
            "INSERT INTO trips (user_id, title, description) VALUES (?, ?, ?)",
            ((u, f"Trip {u}", "Notes mention enc:v1:not-a-real-token, which must not block a rotation"
              if stray_tokens and u == 1 else "A trip") for u in range(1, users + 1)),
        )
        conn.executemany("INSERT INTO trip_album_links (trip_id, user_id, provider, album_id, passphrase) "
                         "VALUES (?, ?, 'synologyphotos', ?, ?)", _albums(writer, users))
        total_photos = int(users * photos_per_user)
        for start in range(0, total_photos, 5000):
            conn.executemany(
                "INSERT INTO trek_photos (id, provider, asset_id, owner_id, file_path, width, height, passphrase) "
                "VALUES (?, 'synologyphotos', ?, ?, NULL, 4032, 3024, ?)",
                _photos(writer, range(start + 1, min(total_photos, start + 5000) + 1), users),
            )
        if shape >= R3_3_0 and plugin_user_share > 0:
            plugin_users = [u for u in range(1, users + 1) if rng.random() < plugin_user_share]
            _insert_plugin_users(conn, writer, plugin_users)
        if stray_tokens and shape >= R4:
            config = '{{"endpoint":"https://example.org","api_token":"{}"}}'.format(writer.seal(
                "addons", "config", {"id": "legacy-addon"}, writer.text(24), json_path=("api_token",)))
            conn.execute("INSERT INTO addons VALUES ('legacy-addon', 'Legacy add-on', ?)", (config,))
        _newer_locations(conn, writer, shape, users)
        conn.execute("COMMIT")
    return SampleDatabase(path, major, shape, writer.secrets, writer.count)


def _newer_locations(conn: sqlite3.Connection, w: _Writer, shape: Release, users: int) -> None:
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


def _user_sql(shape: Release) -> str:
    columns = ["id", "username", "email", "password_hash", "maps_api_key", "unsplash_api_key", "openweather_api_key",
               "mfa_enabled", "mfa_secret", "immich_api_key", "synology_password", "synology_sid", "synology_did"]
    if shape >= R4:
        columns += ["amap_api_key", "airtrail_api_key"]
    elif shape >= R3_1_0:
        columns += ["airtrail_api_key"]
    return f"INSERT INTO users ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _users(w: _Writer, ids: range, shape: Release) -> Iterator[tuple[Any, ...]]:
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


def _settings(w: _Writer, ids: range, shape: Release) -> Iterator[tuple[Any, ...]]:
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


def _albums(w: _Writer, users: int) -> Iterator[tuple[Any, ...]]:
    for album in range(1, max(1, users // 2) + 1):
        owner = w.rng.randint(1, max(users, 1))
        passphrase = w.maybe(0.35, "trip_album_links", "passphrase", {"id": album}, 12)
        yield owner, owner, f"album-{album}", passphrase


def _photos(w: _Writer, ids: range, users: int) -> Iterator[tuple[Any, ...]]:
    for pid in ids:
        yield pid, f"asset-{pid}", w.rng.randint(1, max(users, 1)), w.maybe(0.73, "trek_photos", "passphrase", {"id": pid}, 12)


def _plugins(conn: sqlite3.Connection, w: _Writer) -> None:
    for plugin in _PLUGINS:
        fields = [("oauth_client_id", 1, "instance"), ("oauth_client_secret", 1, "instance"),
                  ("oauth_token_url", 0, "instance"), ("personal_api_token", 1, "user")]
        conn.executemany("INSERT INTO plugin_settings_fields (plugin_id, field_key, secret, scope) VALUES (?, ?, ?, ?)",
                         [(plugin, *f) for f in fields])
        cid = w.seal("plugins", "config", {"id": plugin}, w.text(20), json_path=("oauth_client_id",))
        secret = w.seal("plugins", "config", {"id": plugin}, w.text(44), json_path=("oauth_client_secret",))
        config = (f'{{"oauth_token_url":"https://auth.example.org/token","oauth_client_id":"{cid}",'
                  f'"oauth_client_secret":"{secret}","note":"plain text stays"}}')
        conn.execute("INSERT INTO plugins VALUES (?, ?, ?)", (plugin, plugin.title(), config))


def add_plugin_users(path: Path, key: Key, users: range, *, seed: int = 0) -> list[SampleSecret]:
    """Give some users plugin tokens and per-user plugin config (4.x shape only)."""
    rng = random.Random(seed)
    writer = _Writer(key, rng, True)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        _insert_plugin_users(conn, writer, users)
        conn.execute("COMMIT")
    return writer.secrets


def _insert_plugin_users(conn: sqlite3.Connection, w: _Writer, users: Iterable[int]) -> None:
    configs: list[tuple[str, int, str]] = []
    tokens: list[tuple[str, int, str, str | None]] = []
    for uid in users:
        plugin = w.rng.choice(_PLUGINS)
        ident = {"plugin_id": plugin, "user_id": uid}
        token = w.seal("plugin_user_config", "config", ident, w.text(30), json_path=("personal_api_token",))
        configs.append((plugin, uid, f'{{"personal_api_token":"{token}","units":"metric"}}'))
        access = w.seal("plugin_oauth_tokens", "access_token", ident, w.text(40))
        refresh = w.maybe(0.8, "plugin_oauth_tokens", "refresh_token", ident, 40)
        tokens.append((plugin, uid, access, refresh))
    conn.executemany("INSERT INTO plugin_user_config (plugin_id, user_id, config) VALUES (?, ?, ?)", configs)
    conn.executemany("INSERT INTO plugin_oauth_tokens VALUES (?, ?, ?, ?)", tokens)
