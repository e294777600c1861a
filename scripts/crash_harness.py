#!/usr/bin/env python3
"""Long crash-safety run: SIGKILL real rotations of a bigger database many times.

Every named kill point (several times mid-batch), kills at random moments
across a whole rotation, and kills 0-50 ms after COMMIT starts (inside COMMIT, VACUUM, checkpoint),
for a WAL database and a rollback-journal one. After each kill: integrity
check, every secret under exactly one key and all under the same one, the key
file matching the database (or lagging one step, which the rerun repairs), and
a rerun of the same command that finishes the job.

    python3 scripts/crash_harness.py                  # about 15 minutes on 2 cores
    python3 scripts/crash_harness.py --random 20 --users 500   # quicker look
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyrotate.crashpoints import POINTS  # noqa: E402
from tests.crashkit import Scenario, kill_and_rerun, make_scenario, run_rotation  # noqa: E402


def copy_of(template: Scenario, root: Path) -> Scenario:
    shutil.copytree(template.data_dir.parent, root)
    return dataclasses.replace(template, data_dir=root / "data", new_key_path=root / "new.key")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--photos-per-user", type=float, default=20.0)
    parser.add_argument("--random", type=int, default=60, help="kills at random moments, per journal mode")
    parser.add_argument("--commit", type=int, default=30, help="kills 0-50 ms into COMMIT, per journal mode")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tried = survived = 0
    failures = []
    with tempfile.TemporaryDirectory(prefix="keyrotate-crash-") as work:
        for mode in ("wal", "delete"):
            template = make_scenario(Path(work) / f"template-{mode}", users=args.users,
                                     photos_per_user=args.photos_per_user, journal_mode=mode)
            timing = copy_of(template, Path(work) / f"timing-{mode}")
            start = time.monotonic()
            finished = run_rotation(timing)
            duration = time.monotonic() - start
            if finished.returncode != 0:
                print(finished.stderr, file=sys.stderr)
                return 1
            print(f"[{mode}] {len(template.secrets)} secrets, a full rotation takes {duration:.2f} s", flush=True)
            plan: list[tuple[str | None, float | None, str | None]] = [(p, None, None) for p in POINTS]
            plan += [(f"rotate-batch:{n}", None, None) for n in (2, 5, 10, 20, 30)]
            plan += [(f"backup-copy:{n}", None, None) for n in (2, 50)]
            plan += [(None, rng.uniform(0.05, duration * 1.1), None) for _ in range(args.random)]
            # Aimed at COMMIT itself: a few milliseconds after "before-commit" is reached.
            plan += [(None, rng.uniform(0.0, 0.05), "before-commit") for _ in range(args.commit)]
            for n, (point, after, from_point) in enumerate(plan):
                scenario = copy_of(template, Path(work) / f"{mode}-{n}")
                label = point or f"{after * 1000:.1f} ms after {from_point or 'start'}"
                result = kill_and_rerun(scenario, label, kill_at=point, kill_after=after, from_point=from_point)
                shutil.rmtree(scenario.data_dir.parent)
                if point is not None and not result.killed:
                    print(f"[{mode}] {label:<28} not reached in this database; not counted", flush=True)
                    continue
                tried += 1
                if result.survived:
                    survived += 1
                    status = "ok" if result.killed else "ok (finished before the kill)"
                else:
                    failures.append(result)
                    status = "FAILED"
                print(f"[{mode}] {label:<28} killed={result.killed!s:<5} state={result.after_kill.under}/"
                      f"key file {result.after_kill.key_file}  {status}", flush=True)
    print(f"\nkills survived / tried: {survived} / {tried}")
    for result in failures:
        print(f"FAILED {result.label}: {result}", file=sys.stderr)
    return 0 if survived == tried else 1


if __name__ == "__main__":
    sys.exit(main())
