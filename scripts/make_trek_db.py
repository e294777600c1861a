#!/usr/bin/env python3
"""Build a TREK-shaped data directory of any size, for benchmarks.

Same tables and mix of secret kinds as the fixtures (keyrotate.trek.sample), every
byte derived from --seed, all secrets under a known key that is written to
DIR/data/.encryption_key (mode 0600). With --secrets the number of users is
chosen so that the database holds about that many encrypted secrets, at 20
photos per user (TREK's 370,000-secret case: about 19,000 users, 370,000 photos).

    python3 scripts/make_trek_db.py --secrets 370000 --out bench-out/db-370000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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


def make(out: Path, *, secrets: int | None, users: int | None, photos_per_user: float, major: int,
         seed: int) -> dict[str, object]:
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
    info = {"secrets": sample.count, "users": users, "photos": int(users * photos_per_user), "major": major,
            "seed": seed, "seconds": round(time.perf_counter() - started, 2)}
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
    args = parser.parse_args()
    info = make(args.out, secrets=args.secrets, users=args.users, photos_per_user=args.photos_per_user,
                major=args.major, seed=args.seed)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
