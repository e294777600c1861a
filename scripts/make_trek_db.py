#!/usr/bin/env python3
"""Build a TREK-shaped data directory of any size, for benchmarks.

Same tables and mix of secret kinds as the fixtures (keyrotate.trek.sample), every
byte derived from --seed, all secrets under a known key that is written to
DIR/data/.encryption_key (mode 0600). With --secrets the number of users is
chosen so that the database holds about that many encrypted secrets, at 20
photos per user (TREK's 370,000-secret case: about 19,000 users, 370,000 photos).

--filler N adds about N rows per secret that hold no secret, in tables shaped like
TREK's places, trip photos and day notes (text of a few dozen to a few hundred
bytes), as a real instance with many trips, places and photos has: a larger file
for the same number of secrets, so the copy, scan, VACUUM and integrity checks
weigh more (--filler 2 makes the file about 4.5 times larger).

    python3 scripts/make_trek_db.py --secrets 370000 --out /tmp/trek-370k
    python3 scripts/make_trek_db.py --secrets 370000 --filler 2 --out /tmp/trek-370k-filler2
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyrotate.trek.keys import Key, create_key_file  # noqa: E402
from keyrotate.trek.sample import build_sample_database  # noqa: E402

BENCHMARK_KEY = "keyrotate-benchmark-old-key-not-secret"  # a known key: these databases hold no real secret
PHOTOS_PER_USER = 20.0
PLUGIN_USER_SHARE = 0.05


def secrets_per_user(major: int, photos_per_user: float) -> float:
    """Expected encrypted secrets per user for keyrotate.trek.sample's rates."""
    users = 0.76 + 0.44 + 0.4 + 0.32 + 3 * 0.28 + ((0.24 + 0.28) if major >= 4 else 0)
    settings = 0.4 + 0.28 + 0.36 + ((0.36 + 0.28) if major >= 4 else 0)
    albums = 0.5 * 0.35
    plugins = PLUGIN_USER_SHARE * 2.8 if major >= 4 else 0
    return users + settings + albums + plugins + photos_per_user * 0.73


_FILLER_SCHEMA = """
CREATE TABLE IF NOT EXISTS places (
  id INTEGER PRIMARY KEY AUTOINCREMENT, trip_id INTEGER NOT NULL, name TEXT NOT NULL, description TEXT,
  address TEXT, lat REAL, lng REAL, website TEXT, phone TEXT, notes TEXT, created_at TEXT
);
CREATE TABLE IF NOT EXISTS photos (
  id INTEGER PRIMARY KEY AUTOINCREMENT, trip_id INTEGER NOT NULL, day_id INTEGER, filename TEXT NOT NULL,
  original_name TEXT, file_size INTEGER, mime_type TEXT, caption TEXT, taken_at TEXT, created_at TEXT
);
CREATE TABLE IF NOT EXISTS day_notes (
  id INTEGER PRIMARY KEY AUTOINCREMENT, day_id INTEGER NOT NULL, trip_id INTEGER NOT NULL, text TEXT NOT NULL,
  time TEXT, icon TEXT, sort_order INTEGER, created_at TEXT
);
"""
_FILLER_TABLES = ("places", "photos", "day_notes")


def _filler_rows(table: str, ids: range, trips: int, rng: random.Random, pool: str) -> Iterator[tuple[object, ...]]:
    """Rows of ``table`` with text cut from ``pool`` at random places (cheap, and never a token)."""
    def text(low: int, high: int) -> str:
        start = rng.randrange(len(pool) - high)
        return pool[start:start + rng.randint(low, high)]

    for row in ids:
        trip = rng.randint(1, trips)
        stamp = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 12:00:00"
        if table == "places":
            yield (row, trip, text(8, 40), text(0, 300), text(20, 80), rng.uniform(-60, 60), rng.uniform(-180, 180),
                   "https://example.org/" + text(5, 30), None, text(0, 120), stamp)
        elif table == "photos":
            yield (row, trip, rng.randint(1, 20), f"{rng.getrandbits(64):016x}.jpg", text(8, 30) + ".jpg",
                   rng.randint(200_000, 8_000_000), "image/jpeg", text(0, 100), stamp, stamp)
        else:
            yield row, rng.randint(1, 20), trip, text(10, 200), "09:30", "note", rng.randint(0, 9), stamp


def add_filler(db: Path, rows: int, seed: int) -> None:
    """About ``rows`` rows without secrets, spread over TREK-like places, photos and day notes tables."""
    rng = random.Random(seed ^ 0x5EED)
    words = ("museum", "harbour", "old town", "station", "bakery", "bridge", "café", "market", "beach", "trail",
             "Straße", "plaza", "hotel", "tower", "garden", "north", "south", "view", "tickets", "open 9-17")
    pool = " ".join(rng.choice(words) for _ in range(200_000))
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        trips = conn.execute("SELECT max(id) FROM trips").fetchone()[0] or 1
        conn.executescript(_FILLER_SCHEMA)
        conn.execute("BEGIN")
        per_table = rows // len(_FILLER_TABLES)
        columns = {"places": 11, "photos": 10, "day_notes": 8}
        for table in _FILLER_TABLES:
            insert = f"INSERT INTO {table} VALUES ({', '.join('?' * columns[table])})"
            for start in range(1, per_table + 1, 10_000):
                conn.executemany(insert, _filler_rows(table, range(start, min(per_table, start + 9_999) + 1),
                                                      trips, rng, pool))
        conn.execute("COMMIT")


def make(out: Path, *, secrets: int | None, users: int | None, photos_per_user: float, major: int,
         seed: int, filler: float = 0.0) -> dict[str, object]:
    if users is None:
        if secrets is None:
            raise SystemExit("give --secrets or --users")
        users = max(1, round(secrets / secrets_per_user(major, photos_per_user)))
    data = out / "data"
    data.mkdir(parents=True, exist_ok=False)
    create_key_file(data / ".encryption_key", BENCHMARK_KEY)
    started = time.perf_counter()
    sample = build_sample_database(
        data / "travel.db", Key(BENCHMARK_KEY, "benchmark key"), users=users, photos_per_user=photos_per_user,
        major=major, seed=seed, keep_secrets=False, plugin_user_share=PLUGIN_USER_SHARE,
    )
    filler_rows = round(filler * sample.count)
    if filler_rows:
        add_filler(data / "travel.db", filler_rows, seed)
    info = {"secrets": sample.count, "users": users, "photos": int(users * photos_per_user), "major": major,
            "seed": seed, "filler_rows": filler_rows, "bytes": (data / "travel.db").stat().st_size,
            "seconds": round(time.perf_counter() - started, 2)}
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="new directory; the database goes to OUT/data/travel.db")
    parser.add_argument("--secrets", type=int, help="about this many encrypted secrets")
    parser.add_argument("--users", type=int, help="exactly this many users (instead of --secrets)")
    parser.add_argument("--photos-per-user", type=float, default=PHOTOS_PER_USER)
    parser.add_argument("--major", type=int, choices=(3, 4), default=4, help="TREK 3.x or 4.x shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--filler", type=float, default=0.0,
                        help="about N rows without secrets per secret (places, photos, day notes): a larger file")
    args = parser.parse_args()
    info = make(args.out, secrets=args.secrets, users=args.users, photos_per_user=args.photos_per_user,
                major=args.major, seed=args.seed, filler=args.filler)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
