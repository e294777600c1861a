"""The tables of a sample TREK database, release by release (TREK-FORMAT.md sections 4 and 8)."""

from __future__ import annotations

import sqlite3

from keyrotate.trek.catalogue import MARKED_RELEASES, R3_1_0, R3_2_0, R3_3_0, R4, Release

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


def create_tables(conn: sqlite3.Connection, shape: Release) -> None:
    """The tables of TREK release ``shape``: those of 3.0 plus what each later release added."""
    added = ((R3_1_0, _V3_1_SCHEMA), (R3_2_0, _V3_2_SCHEMA), (R3_3_0, _V3_3_SCHEMA), (R4, _V4_SCHEMA))
    conn.executescript(_V3_SCHEMA + "".join(sql for since, sql in added if shape >= since))


def user_insert_sql(shape: Release) -> str:
    """The INSERT for one ``users`` row of ``shape``, columns in the order :func:`sample_rows.users` yields."""
    columns = ["id", "username", "email", "password_hash", "maps_api_key", "unsplash_api_key", "openweather_api_key",
               "mfa_enabled", "mfa_secret", "immich_api_key", "synology_password", "synology_sid", "synology_did"]
    if shape >= R4:
        columns += ["amap_api_key", "airtrail_api_key"]
    elif shape >= R3_1_0:
        columns += ["airtrail_api_key"]
    return f"INSERT INTO users ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
