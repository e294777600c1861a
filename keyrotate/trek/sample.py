"""Build TREK-shaped databases with known secrets: for the demo, tests and benchmarks.

The schema holds the tables and columns TREK keeps secrets in (3.x or 4.x shape,
TREK-FORMAT.md section 4) plus a few ordinary ones, and is filled with the mix of
secret kinds seen in real TREK databases. Everything is derived from ``seed``,
so the same arguments give the same database.
"""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from keyrotate.store.files import write_new_file
from keyrotate.trek import sample_rows as rows
from keyrotate.trek.catalogue import R3_2_0, R3_3_0, R4, Release
from keyrotate.trek.keys import Key
from keyrotate.trek.sample_schema import RELEASES, create_tables, user_insert_sql
from keyrotate.trek.sample_secrets import SampleSecret, SecretWriter


@dataclass
class SampleDatabase:
    path: Path
    major: int
    release: Release
    secrets: list[SampleSecret] = field(default_factory=list)
    count: int = 0  # encrypted secrets written, also when ``secrets`` is not kept


@dataclass(frozen=True)
class _Mix:
    users: int
    photos_per_user: float
    plugin_user_share: float


def build_sample_database(
    path: Path,
    key: Key,
    *,
    users: int = 25,
    photos_per_user: float = 2.4,
    major: int = 4,
    seed: int = 0,
    keep_secrets: bool = True,
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
    writer = SecretWriter(key, random.Random(seed), keep_secrets)
    # It holds secrets: mode 0600 from the first byte (SQLite gives the -wal and -shm the same mode).
    write_new_file(path, b"")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        create_tables(conn, shape)
        conn.execute("BEGIN")
        _fill(conn, writer, shape, schema_version, _Mix(users, photos_per_user, plugin_user_share))
        conn.execute("COMMIT")
    return SampleDatabase(path, 4 if shape is R4 else 3, shape, writer.secrets, writer.count)


def _fill(conn: sqlite3.Connection, w: SecretWriter, shape: Release, schema_version: int, mix: _Mix) -> None:
    """Every row, in the order that keeps one ``seed`` giving the same database as before."""
    rows.insert_app_settings(conn, w, shape, schema_version)
    if shape >= R3_2_0:
        rows.insert_plugins(conn, w)
    _users_and_trips(conn, w, shape, mix)
    _albums_and_photos(conn, w, mix)
    if shape >= R3_3_0 and mix.plugin_user_share > 0:
        chosen = [u for u in range(1, mix.users + 1) if w.rng.random() < mix.plugin_user_share]
        rows.insert_plugin_users(conn, w, chosen)
    if shape >= R4:
        rows.insert_stray_addon(conn, w)
    rows.newer_locations(conn, w, shape, mix.users)


def _users_and_trips(conn: sqlite3.Connection, w: SecretWriter, shape: Release, mix: _Mix) -> None:
    for start in range(0, mix.users, 1000):
        ids = range(start + 1, min(mix.users, start + 1000) + 1)
        conn.executemany(user_insert_sql(shape), rows.user_rows(w, ids, shape))
        conn.executemany("INSERT INTO settings (user_id, key, value) VALUES (?, ?, ?)", rows.setting_rows(w, ids, shape))
    conn.executemany(
        "INSERT INTO trips (user_id, title, description) VALUES (?, ?, ?)",
        ((u, f"Trip {u}", "Notes mention enc:v1:not-a-real-token, which must not block a rotation"
          if u == 1 else "A trip") for u in range(1, mix.users + 1)),
    )


def _albums_and_photos(conn: sqlite3.Connection, w: SecretWriter, mix: _Mix) -> None:
    conn.executemany("INSERT INTO trip_album_links (trip_id, user_id, provider, album_id, passphrase) "
                     "VALUES (?, ?, 'synologyphotos', ?, ?)", rows.album_rows(w, mix.users))
    total_photos = int(mix.users * mix.photos_per_user)
    for start in range(0, total_photos, 5000):
        conn.executemany(
            "INSERT INTO trek_photos (id, provider, asset_id, owner_id, file_path, width, height, passphrase) "
            "VALUES (?, 'synologyphotos', ?, ?, NULL, 4032, 3024, ?)",
            rows.photo_rows(w, range(start + 1, min(total_photos, start + 5000) + 1), mix.users),
        )


def add_plugin_users(path: Path, key: Key, users: range, *, seed: int = 0) -> list[SampleSecret]:
    """Give some users plugin tokens and per-user plugin config (4.x shape only)."""
    writer = SecretWriter(key, random.Random(seed), True)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        rows.insert_plugin_users(conn, writer, users)
        conn.execute("COMMIT")
    return writer.secrets
