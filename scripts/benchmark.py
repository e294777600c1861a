#!/usr/bin/env python3
"""Rotate generated TREK databases end to end through the real CLI, and compare with a floor.

For each size: build (or reuse) a database with scripts/make_trek_db.py, then
several times over a fresh copy:

* keyrotate: ``python3 -m keyrotate rotate`` in a subprocess (backup, discovery
  scan, checks before and after the commit, VACUUM unless --no-vacuum, key
  file untouched), progress off;
* floor: the bare loop in a subprocess (``--floor``): read the same catalogued
  values in rowid batches, decrypt, re-encrypt, one UPDATE statement per batch,
  one transaction, with the same page cache size as keyrotate's writer; no
  backup, no scan, no verification, one core;
* verify: ``python3 -m keyrotate verify`` on the rotated copy.

With ``--exposure`` it measures ``keyrotate exposure --format F`` for every
format instead (read-only, on one fresh copy), and prints that table only.

Wall times are medians over the runs (floor and keyrotate alternate, so load
from other programs hits both). Peak RSS is the largest sum of VmRSS over the
command's whole process tree (the CLI and its crypto workers), sampled every
10 ms, so shared pages count once per process: an upper bound.

    python3 scripts/benchmark.py --secrets 100000 370000 1000000 --runs 5
    python3 scripts/benchmark.py --exposure --secrets 370000 --runs 3
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keyrotate.rotation.scanning import BATCH_ROWS  # noqa: E402
from keyrotate.store.database import WRITE_CACHE_KIB, quote_identifier  # noqa: E402
from keyrotate.trek.catalogue import Presence, resolve_catalogue  # noqa: E402
from keyrotate.trek.formats import API_PREFIX, IV_BYTES, MIN_SEALED_BYTES, TAG_BYTES, Scheme  # noqa: E402
from keyrotate.trek.keys import Key  # noqa: E402
from keyrotate.trek.schema import inspect_database  # noqa: E402

NEW_KEY = "keyrotate-benchmark-new-key-not-secret"


# -- the floor ------------------------------------------------------------------


def floor_rotate(db: Path, old_text: str, new_text: str) -> int:
    """The bare re-encryption loop over every catalogued whole value. Returns the count."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    old, new = Key(old_text, "old"), Key(new_text, "new")
    a2b, b2a, urandom = binascii.a2b_base64, binascii.b2a_base64, os.urandom
    done = 0
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        info = inspect_database(conn, db)
        conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")  # the same page cache keyrotate's writer uses
        conn.execute("BEGIN IMMEDIATE")
        for entry in resolve_catalogue(info.schema, info.version):
            loc = entry.location
            if entry.presence is not Presence.ACTIVE or not loc.whole_value:
                continue
            opener = AESGCM(old.aes_key(loc.scheme.domain))
            sealer = AESGCM(new.aes_key(loc.scheme.domain))
            prefix = API_PREFIX if loc.scheme is Scheme.API else ""
            table, column = quote_identifier(loc.table), quote_identifier(loc.column)
            where = f"{column} IS NOT NULL AND {column} != ''"
            params: tuple[str, ...] = ()
            if loc.setting_key is not None:
                where += ' AND "key" = ?'
                params = (loc.setting_key,)
            select = f"SELECT rowid, {column} FROM {table} WHERE rowid > ? AND {where} ORDER BY rowid LIMIT {BATCH_ROWS}"
            update = f"UPDATE {table} SET {column} = ? WHERE rowid = ?"
            last = -(2**63)
            while rows := conn.execute(select, (last, *params)).fetchall():
                last = rows[-1][0]
                ivs = urandom(IV_BYTES * len(rows))
                updates = []
                for n, (rowid, value) in enumerate(rows):
                    if not value.startswith(prefix):
                        continue
                    sealed = a2b(value[len(prefix):])
                    plaintext = opener.decrypt(sealed[:IV_BYTES], sealed[MIN_SEALED_BYTES:] + sealed[IV_BYTES:MIN_SEALED_BYTES], None)
                    iv = ivs[n * IV_BYTES : (n + 1) * IV_BYTES]
                    out = sealer.encrypt(iv, plaintext, None)
                    updates.append((prefix + b2a(iv + out[-TAG_BYTES:] + out[:-TAG_BYTES], newline=False).decode(), rowid))
                conn.executemany(update, updates)
                done += len(updates)
        conn.execute("COMMIT")
    return done


# -- measuring a command ----------------------------------------------------------


def _tree_rss_kib(pid: int) -> int:
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(child) for child in handle.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system, workers included), peak RSS of the process tree in MB, stdout."""
    # Output goes to files: a full pipe would block the command and skew the time.
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, text=True)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss_kib(proc.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{err}")
    return wall, usage.ru_utime + usage.ru_stime, peak / 1024, out


# -- one size -----------------------------------------------------------------------


def prepare(out: Path, secrets: int, seed: int) -> tuple[Path, dict[str, object]]:
    source = out / f"db-{secrets}-seed{seed}"
    if not (source / "info.json").exists():
        shutil.rmtree(source, ignore_errors=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_trek_db.py"), "--secrets", str(secrets),
                        "--seed", str(seed), "--out", str(source)], check=True, stdout=subprocess.DEVNULL)
    return source, json.loads((source / "info.json").read_text())


def fresh_copy(source: Path, work: Path) -> Path:
    """A private copy of the generated database plus the new key file."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    shutil.copyfile(source / "data" / "travel.db", work / "data" / "travel.db")
    new_key = work / "new.key"
    new_key.write_text(NEW_KEY + "\n")
    new_key.chmod(0o600)
    return work / "data" / "travel.db"


def bench_size(out: Path, secrets: int, runs: int, seed: int, workers: str | None, vacuum: bool) -> dict[str, object]:
    source, info = prepare(out, secrets, seed)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ENCRYPTION_KEY", None)
    work = out / "work"
    old_key_file = source / "data" / ".encryption_key"
    extra = ["--workers", workers] if workers is not None else []
    rotate_extra = [] if vacuum else ["--no-vacuum"]
    rotated_walls, floor_walls, verify_walls, rss, floor_rss = [], [], [], [], []
    rotated_cpu: list[float] = []
    floor_cpu: list[float] = []
    rotated = floored = 0
    for run in range(runs):
        order = ("floor", "keyrotate") if run % 2 == 0 else ("keyrotate", "floor")
        for what in order:
            db = fresh_copy(source, work)
            if what == "floor":
                wall, cpu, peak, text = measure([sys.executable, str(Path(__file__).resolve()), "--floor", str(db),
                                            "--old-key-file", str(old_key_file)], env)
                floored = int(text.strip())
                floor_walls.append(wall)
                floor_cpu.append(cpu)
                floor_rss.append(peak)
                continue
            wall, cpu, peak, text = measure(
                [sys.executable, "-m", "keyrotate", "rotate", "--db", str(db), "--old-key-file", str(old_key_file),
                 "--new-key-file", str(work / "new.key"), "--backup", str(work / "backup.db"), "--json", *extra,
                 *rotate_extra], env)
            report = json.loads(text)
            rotated = report["totals"]["rotated"]
            assert report["verified_after_commit"], "rotation did not verify"
            rotated_walls.append(wall)
            rotated_cpu.append(cpu)
            rss.append(peak)
            v_wall, _, _, _ = measure([sys.executable, "-m", "keyrotate", "verify", "--db", str(db), "--key-file",
                                    str(work / "new.key"), "--quiet", *extra], env)
            verify_walls.append(v_wall)
        print(f"  {secrets}: run {run + 1}/{runs}: keyrotate {rotated_walls[-1]:.2f}s (cpu {rotated_cpu[-1]:.2f}s), "
              f"floor {floor_walls[-1]:.2f}s (cpu {floor_cpu[-1]:.2f}s), verify {verify_walls[-1]:.2f}s, "
              f"rss {rss[-1]:.0f} MB, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    wall = statistics.median(rotated_walls)
    floor = statistics.median(floor_walls)
    return {
        "secrets": rotated, "floor_secrets": floored, "runs": runs, "wall": wall, "us_per_secret": wall / rotated * 1e6,
        "peak_rss_mb": max(rss), "floor": floor, "ratio": wall / floor, "verify": statistics.median(verify_walls),
        "floor_rss_mb": max(floor_rss), "cpu": statistics.median(rotated_cpu), "floor_cpu": statistics.median(floor_cpu),
        "database": info,
    }


EXPOSURE_FORMATS = ("text", "markdown", "json", "csv")


def bench_exposure(out: Path, secrets: int, runs: int, seed: int, workers: str | None) -> list[dict[str, object]]:
    """``keyrotate exposure`` in each format: median wall, largest peak RSS; formats alternate within a run."""
    source, _ = prepare(out, secrets, seed)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ENCRYPTION_KEY", None)
    work = out / "work"
    db = fresh_copy(source, work)
    extra = ["--workers", workers] if workers is not None else []
    walls: dict[str, list[float]] = {fmt: [] for fmt in EXPOSURE_FORMATS}
    peaks: dict[str, list[float]] = {fmt: [] for fmt in EXPOSURE_FORMATS}
    exposed = 0
    for run in range(runs):
        for fmt in EXPOSURE_FORMATS:
            wall, _, peak, text = measure(
                [sys.executable, "-m", "keyrotate", "exposure", "--db", str(db), "--key-file",
                 str(source / "data" / ".encryption_key"), "--format", fmt, "--no-copies", "--quiet", *extra], env)
            walls[fmt].append(wall)
            peaks[fmt].append(peak)
            if fmt == "json":
                exposed = json.loads(text)["totals"]["exposed"]
            print(f"  {secrets}: run {run + 1}/{runs}: exposure --format {fmt} {wall:.2f}s, rss {peak:.0f} MB, "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return [{"secrets": exposed, "format": fmt, "runs": runs, "wall": statistics.median(walls[fmt]),
             "peak_rss_mb": max(peaks[fmt])} for fmt in EXPOSURE_FORMATS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secrets", type=int, nargs="+", default=[100_000, 370_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=5, help="runs per size (median reported)")
    parser.add_argument("--max-runs-1m", type=int, default=3, help="runs for sizes of 1,000,000 secrets and more")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", help="passed to keyrotate --workers (default: keyrotate decides)")
    parser.add_argument("--no-vacuum", action="store_true", help="pass --no-vacuum to keyrotate rotate")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--exposure", action="store_true",
                        help="measure `keyrotate exposure` in every format instead of the rotation")
    parser.add_argument("--floor", type=Path, help=argparse.SUPPRESS)  # internal: run the floor on this database
    parser.add_argument("--old-key-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor is not None:
        print(floor_rotate(args.floor, args.old_key_file.read_text().strip(), NEW_KEY))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}, load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
          file=sys.stderr)
    if args.exposure:
        rows = [row for secrets in args.secrets
                for row in bench_exposure(args.out, secrets, args.runs, args.seed, args.workers)]
        print("| secrets | format | runs | wall (median) | peak RSS (largest) |")
        print("| ---: | --- | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['secrets']:,} | {r['format']} | {r['runs']} | {r['wall']:.2f} s | {r['peak_rss_mb']:.0f} MB |")
        if args.json:
            print(json.dumps(rows, indent=2))
        return
    results = []
    for secrets in args.secrets:
        runs = min(args.runs, args.max_runs_1m) if secrets >= 1_000_000 else args.runs
        results.append(bench_size(args.out, secrets, runs, args.seed, args.workers, not args.no_vacuum))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    print("| secrets | runs | keyrotate wall (median) | µs/secret | peak RSS | floor (median) | ratio | verify (median) "
          "| CPU keyrotate / floor |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['secrets']:,} | {r['runs']} | {r['wall']:.2f} s | {r['us_per_secret']:.1f} | {r['peak_rss_mb']:.0f} MB "
              f"| {r['floor']:.2f} s | {r['ratio']:.2f}x | {r['verify']:.2f} s | {r['cpu']:.2f} s / {r['floor_cpu']:.2f} s |")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
