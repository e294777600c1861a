#!/usr/bin/env python3
"""Rotate generated TREK databases end to end through the real CLI, and compare with a floor.

For each size (and each --filler, each --host), ``--runs`` times in this order, each on a
fresh copy of the generated database, so load from other programs hits all three alike:

* floor: the bare loop in a subprocess (``--floor``): read the catalogued
  whole values in rowid batches, decrypt, re-encrypt, ``executemany`` UPDATE,
  one transaction, with the same page cache size as keyrotate's writer; no
  backup, no scan, no verification, one core;
* keyrotate: ``python3 -m keyrotate rotate`` in a subprocess (backup with its
  integrity check, discovery scan, checks before and after the commit, VACUUM
  unless --no-vacuum, checkpoint), progress off;
* verify: ``python3 -m keyrotate verify`` on the copy keyrotate just rotated.

The table gives medians with their spread (min–max over the runs), and the
ratios to the floor as the median (min–max) of each run's own ratio, and the
median CPU time (user + system, workers included) of keyrotate and of the
floor: steadier than wall time on a busy machine. Peak RSS is over all of keyrotate's processes (the CLI and its crypto workers): the sum
of each process's own peak (VmHWM, read from /proc every 10 ms), an upper
bound on what they held at one moment. Peak PSS, a second and lower figure, is
the largest sum of the processes' proportional set sizes seen at one 10 ms
sample (/proc/PID/smaps_rollup: a page two processes share counts half in
each), so pages shared by the CLI and a worker count once; a short peak between
samples can be missed. "CPU stolen by the host" is the median share of all
the machine's CPU time that the hypervisor gave to other guests while the
floor (and keyrotate) ran (``steal`` in /proc/stat): on a shared VM it says how
much of two cores a run really had. ``--host loaded`` measures with
``--workers 0`` while one CPU-bound neighbour process runs (floor included):
what to expect on a host busy with other work.

Databases come from scripts/make_trek_db.py and are cached in --out (default
/tmp/keyrotate-bench), keyed by size, seed, filler and the generator's source.
``--filler N`` adds N rows without secrets per secret (a larger file, as an
instance with many places and photos has).

With ``--exposure`` it measures ``keyrotate exposure --format F`` for every
format instead (read-only, on one fresh copy), and prints that table only.

    python3 scripts/benchmark.py --secrets 100000 370000 1000000 --runs 5
    python3 scripts/benchmark.py --secrets 100000 370000 1000000 --filler 0 2 --host idle loaded
    python3 scripts/benchmark.py --exposure --secrets 370000 --runs 3
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keyrotate.rotation.reading import BATCH_ROWS  # noqa: E402
from keyrotate.store.database import quote_identifier  # noqa: E402
from keyrotate.trek.catalogue import Presence, resolve_catalogue  # noqa: E402
from keyrotate.trek.formats import API_PREFIX, IV_BYTES, MIN_SEALED_BYTES, TAG_BYTES, Scheme  # noqa: E402
from keyrotate.trek.keys import Key  # noqa: E402
from keyrotate.trek.schema import inspect_database  # noqa: E402

NEW_KEY = "keyrotate-benchmark-new-key-not-secret"
# The floor's page cache: the fastest of 2, 4, 8 and 16 MiB for it (370k, idle VM, medians of 5 alternating runs:
# 1.96, 2.09, 1.95, 1.88 s), whatever keyrotate's own writer uses, so a smaller cache there cannot slow the floor.
FLOOR_CACHE_KIB = 16 * 1024


# -- the floor ------------------------------------------------------------------


def floor_rotate(db: Path, old_text: str, new_text: str) -> int:
    """The bare re-encryption loop over every catalogued whole value. Returns the count."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    old, new = Key(old_text, "old"), Key(new_text, "new")
    a2b, b2a, urandom = binascii.a2b_base64, binascii.b2a_base64, os.urandom
    done = 0
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        info = inspect_database(conn, db)
        conn.execute(f"PRAGMA cache_size = -{FLOOR_CACHE_KIB}")
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


@dataclass(frozen=True)
class Measured:
    wall: float  # seconds
    cpu: float  # user + system seconds of the command and every process it waited for (workers included)
    rss_mb: float  # peak RSS of all its processes: the sum of each process's own peak (VmHWM), an upper bound
    rss_sampled_mb: float  # the largest sum of VmRSS over the process tree seen at one 10 ms sample
    pss_mb: float  # the largest sum of PSS over the process tree seen at one 10 ms sample (a shared page counted once)
    stdout: str
    stolen: float = 0.0  # share of the machine's CPU time the hypervisor gave other guests meanwhile (0..1)


def _cpu_ticks() -> tuple[int, int]:
    """(steal, all) clock ticks of every CPU since boot, from /proc/stat (Linux; zeros elsewhere)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user and nice]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(child) for child in handle.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return pids


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process: each page it shares counted as its share, zero once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return 0


def _command_line(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process, zeros once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return rss, hwm


# Runs the command as its child and reports on fd argv[1]: pid, exit status, peak RSS (KiB), CPU and wall seconds.
# A child's ru_maxrss starts at the size of the process that forked it (the kernel carries the pre-exec memory's
# peak over exec), so the command is never forked by this benchmark process, which grows as it runs: a fresh,
# small launcher forks it instead, and every command starts from the same floor.
_LAUNCHER = """
import os, subprocess, sys, time
report = int(sys.argv[1])
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
os.write(report, b"%d\\n" % proc.pid)
_, status, usage = os.wait4(proc.pid, 0)
os.write(report, b"%d %d %r %r\\n" % (os.waitstatus_to_exitcode(status), usage.ru_maxrss,
         usage.ru_utime + usage.ru_stime, time.perf_counter() - started))
"""


def run_measured(command: list[str], env: dict[str, str]) -> Measured:
    """Run ``command`` from a small launcher, polling /proc every 10 ms for the memory of its whole process tree."""
    # Output goes to files: a full pipe would block the command and skew the time.
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr, \
            os.fdopen(read_end, "rb") as report:
        ticks_before = _cpu_ticks()
        launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(write_end), *command], stdout=stdout,
                                    stderr=stderr, env=env, text=True, pass_fds=(write_end,))
        os.close(write_end)
        started = report.readline()
        if not started:  # the launcher could not start the command
            launcher.wait()
            stderr.seek(0)
            raise SystemExit(f"{' '.join(command)} did not start:\n{stderr.read()}")
        pid = int(started)
        # Per process: its current program (command line) and that program's VmHWM. A child seen between its
        # fork and its exec still shares or copies its parent's memory, and the kernel starts VmHWM again at
        # exec: only the program a pid runs last counts, with its own peak (as the kernel reports it).
        peaks: dict[int, tuple[bytes, int]] = {}
        sampled = pss = 0
        while launcher.poll() is None:
            total = total_pss = 0
            for member in _process_tree(pid):
                rss, hwm = _memory_kib(member)
                total += rss
                total_pss += _pss_kib(member)
                program = _command_line(member)
                seen = peaks.get(member)
                peaks[member] = (program, hwm if seen is None or seen[0] != program else max(seen[1], hwm))
            sampled = max(sampled, total)
            pss = max(pss, total_pss)
            time.sleep(0.01)
        returncode, maxrss, cpu, wall = report.readline().split()
        ticks_after = _cpu_ticks()
        program, hwm = peaks.get(pid, (b"", 0))
        peaks[pid] = (program, max(hwm, int(maxrss)))  # its very last peak, in KiB on Linux
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if launcher.returncode != 0 or int(returncode) != 0:
        raise SystemExit(f"{' '.join(command)} exited {returncode}:\n{err}")
    total_peak = sum(hwm for _, hwm in peaks.values())
    steal, ticks = (after - before for after, before in zip(ticks_after, ticks_before, strict=True))
    return Measured(float(wall), float(cpu), max(sampled, total_peak) / 1024, sampled / 1024, pss / 1024, out,
                    steal / ticks if ticks > 0 else 0.0)


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds, peak RSS of all processes in MB, stdout (see :class:`Measured`)."""
    m = run_measured(command, env)
    return m.wall, m.cpu, m.rss_mb, m.stdout


@contextmanager
def cpu_neighbour(active: bool) -> Iterator[None]:
    """One CPU-bound process running beside the measurement (a loaded host), when ``active``."""
    if not active:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


# -- the databases ------------------------------------------------------------------


def _generator_version() -> str:
    digest = hashlib.sha256()
    for source in (ROOT / "scripts" / "make_trek_db.py", ROOT / "keyrotate" / "trek" / "sample.py"):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:10]


def prepare(out: Path, secrets: int, seed: int, filler: float = 0.0) -> tuple[Path, dict[str, object]]:
    """The generated database for these parameters, built on first use and cached in ``out``."""
    source = out / f"db-{secrets}-seed{seed}-filler{filler:g}-gen{_generator_version()}"
    if not (source / "info.json").exists():
        # Built under a private name and renamed: a second benchmark running at the same time never sees half a build.
        building = Path(tempfile.mkdtemp(dir=out, prefix=f"{source.name}.building-"))
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_trek_db.py"), "--secrets", str(secrets),
                        "--seed", str(seed), "--filler", f"{filler:g}", "--out", str(building / "db")],
                       check=True, stdout=subprocess.DEVNULL)
        with suppress(OSError):  # built meanwhile by another run
            (building / "db").rename(source)
        shutil.rmtree(building, ignore_errors=True)
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


# -- one size ------------------------------------------------------------------------


@dataclass
class Series:
    """One command's measurements over the runs."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    pss: list[float] = field(default_factory=list)
    stolen: list[float] = field(default_factory=list)

    def add(self, m: Measured) -> None:
        self.walls.append(m.wall)
        self.cpus.append(m.cpu)
        self.rss.append(m.rss_mb)
        self.pss.append(m.pss_mb)
        self.stolen.append(m.stolen)

    def summary(self) -> dict[str, float]:
        return {"median": statistics.median(self.walls), "min": min(self.walls), "max": max(self.walls),
                "cpu": statistics.median(self.cpus), "peak_rss_mb": max(self.rss), "peak_pss_mb": max(self.pss),
                "stolen": statistics.median(self.stolen)}


def _ratios(top: list[float], bottom: list[float]) -> dict[str, float]:
    """Per-run ratios (each run's command over the same run's floor): median, min, max."""
    each = [a / b for a, b in zip(top, bottom, strict=True)]
    return {"median": statistics.median(each), "min": min(each), "max": max(each)}


@dataclass(frozen=True)
class Case:
    secrets: int
    runs: int
    seed: int = 0
    filler: float = 0.0
    loaded: bool = False  # --workers 0 and one CPU-bound neighbour process
    workers: str | None = None
    vacuum: bool = True


def measured_env() -> dict[str, str]:
    """The environment every measured program runs in: this checkout's keyrotate, already compiled.

    An installed keyrotate comes with its bytecode (pip compiles it at install time); run from the source
    tree with PYTHONDONTWRITEBYTECODE set (as on the dev VM) it would compile every module on every run,
    ~55 ms per process. So its modules are compiled once, into their own ``__pycache__`` (ignored by git).
    Not with PYTHONPYCACHEPREFIX: Python then looks there for every module's bytecode, the standard
    library's and click's too, and compiled all of them on every run (~0.3 s a process).
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ENCRYPTION_KEY", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "keyrotate")], env=env, check=True)
    return env


def bench_size(out: Path, case: Case) -> dict[str, object]:
    """``case.runs`` runs of floor, keyrotate rotate, keyrotate verify, in that order, each on a fresh copy."""
    source, info = prepare(out, case.secrets, case.seed, case.filler)
    env = measured_env()
    work = Path(tempfile.mkdtemp(dir=out, prefix="work-"))
    old_key_file = source / "data" / ".encryption_key"
    workers = "0" if case.loaded else case.workers
    extra = ["--workers", workers] if workers is not None else []
    rotate_extra = [] if case.vacuum else ["--no-vacuum"]
    floor, rotate, verify = Series(), Series(), Series()
    rotated = floored = 0
    name = f"{case.secrets}{f' filler {case.filler:g}' if case.filler else ''}{' loaded' if case.loaded else ''}"
    with cpu_neighbour(case.loaded):
        for run in range(case.runs):
            db = fresh_copy(source, work / "copy")
            m = run_measured([sys.executable, str(Path(__file__).resolve()), "--floor", str(db),
                              "--old-key-file", str(old_key_file)], env)
            floored = int(m.stdout.strip())
            floor.add(m)
            db = fresh_copy(source, work / "copy")
            m = run_measured(
                [sys.executable, "-m", "keyrotate", "rotate", "--db", str(db), "--old-key-file", str(old_key_file),
                 "--new-key-file", str(work / "copy" / "new.key"), "--backup", str(work / "copy" / "backup.db"),
                 "--json", *extra, *rotate_extra], env)
            report = json.loads(m.stdout)
            rotated = report["totals"]["rotated"]
            assert report["verified_after_commit"], "rotation did not verify"
            rotate.add(m)
            verify.add(run_measured([sys.executable, "-m", "keyrotate", "verify", "--db", str(db), "--key-file",
                                     str(work / "copy" / "new.key"), "--quiet", *extra], env))
            print(f"  {name}: run {run + 1}/{case.runs}: floor {floor.walls[-1]:.2f}s (cpu {floor.cpus[-1]:.2f}s), "
                  f"keyrotate {rotate.walls[-1]:.2f}s (cpu {rotate.cpus[-1]:.2f}s, {rotate.rss[-1]:.0f} MB, "
                  f"PSS {rotate.pss[-1]:.0f} MB), "
                  f"verify {verify.walls[-1]:.2f}s, load {os.getloadavg()[0]:.2f}, "
                  f"stolen {100 * rotate.stolen[-1]:.0f} %", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    keyrotate = rotate.summary()
    return {
        "secrets": rotated, "floor_secrets": floored, "runs": case.runs, "filler": case.filler,
        "loaded": case.loaded, "db_mb": (source / "data" / "travel.db").stat().st_size / 1e6,
        "keyrotate": keyrotate, "floor": floor.summary(), "verify": verify.summary(),
        "us_per_secret": keyrotate["median"] / rotated * 1e6,
        "ratio": _ratios(rotate.walls, floor.walls), "verify_ratio": _ratios(verify.walls, floor.walls),
        "database": info,
    }


def _spread(s: dict[str, float], unit: str = " s") -> str:
    return f"{s['median']:.2f}{unit} ({s['min']:.2f}–{s['max']:.2f})"


def print_table(results: list[dict[str, Any]]) -> None:
    print("| database | host | secrets | runs | keyrotate (median, min–max) | µs/secret | peak RSS, all processes "
          "| peak PSS, sampled | floor (median, min–max) | keyrotate / floor | verify (median, min–max) | verify / floor "
          "| CPU keyrotate / floor | CPU stolen by the host |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        kind = f"filler {r['filler']:g}, {r['db_mb']:.0f} MB" if r["filler"] else f"generator, {r['db_mb']:.0f} MB"
        host = "loaded: --workers 0 + 1 busy process" if r["loaded"] else "as is"
        print(f"| {kind} | {host} | {r['secrets']:,} | {r['runs']} | {_spread(r['keyrotate'])} "
              f"| {r['us_per_secret']:.1f} | {r['keyrotate']['peak_rss_mb']:.0f} MB "
              f"| {r['keyrotate']['peak_pss_mb']:.0f} MB | {_spread(r['floor'])} "
              f"| {_spread(r['ratio'], 'x')} | {_spread(r['verify'])} | {_spread(r['verify_ratio'], 'x')} "
              f"| {r['keyrotate']['cpu']:.2f} s / {r['floor']['cpu']:.2f} s "
              f"| {100 * r['floor']['stolen']:.0f} % / {100 * r['keyrotate']['stolen']:.0f} % |")


EXPOSURE_FORMATS = ("text", "markdown", "json", "csv")


def _exposed(report: Path) -> int:
    """``totals.exposed`` of a JSON exposure report, read from its end (the totals close the document)."""
    with report.open("rb") as handle:
        handle.seek(max(0, report.stat().st_size - 65536))
        found = re.search(rb'"exposed": (\d+)', handle.read())
    if found is None:
        raise SystemExit(f"{report}: no totals.exposed")
    return int(found.group(1))


def bench_exposure(out: Path, secrets: int, runs: int, seed: int, workers: str | None) -> list[dict[str, object]]:
    """``keyrotate exposure`` in each format: median wall, largest peak RSS; formats alternate within a run."""
    source, _ = prepare(out, secrets, seed)
    env = measured_env()
    work = Path(tempfile.mkdtemp(dir=out, prefix="exposure-work-"))  # never another benchmark's work directory
    db = fresh_copy(source, work)
    extra = ["--workers", workers] if workers is not None else []
    walls: dict[str, list[float]] = {fmt: [] for fmt in EXPOSURE_FORMATS}
    cpus: dict[str, list[float]] = {fmt: [] for fmt in EXPOSURE_FORMATS}
    peaks: dict[str, list[float]] = {fmt: [] for fmt in EXPOSURE_FORMATS}
    loads: list[float] = []
    exposed = 0
    for run in range(runs):
        for fmt in EXPOSURE_FORMATS:
            # The report goes to a file, never through this process (run_measured launches from a small process).
            output = work / f"exposure.{fmt}"
            wall, cpu, peak, _ = measure(
                ["sh", "-c", 'exec "$@" > "$0"', str(output), sys.executable, "-m", "keyrotate", "exposure",
                 "--db", str(db), "--key-file", str(source / "data" / ".encryption_key"), "--format", fmt,
                 "--no-copies", "--quiet", *extra], env)
            walls[fmt].append(wall)
            cpus[fmt].append(cpu)
            peaks[fmt].append(peak)
            loads.append(os.getloadavg()[0])
            if fmt == "json":
                exposed = _exposed(output)
            output.unlink()
            print(f"  {secrets}: run {run + 1}/{runs}: exposure --format {fmt} {wall:.2f}s (cpu {cpu:.2f}s), "
                  f"rss {peak:.0f} MB, load {loads[-1]:.2f}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return [{"secrets": exposed, "format": fmt, "runs": runs, "wall": statistics.median(walls[fmt]),
             "us_per_secret": statistics.median(walls[fmt]) / max(exposed, 1) * 1e6,
             "cpu": statistics.median(cpus[fmt]), "peak_rss_mb": max(peaks[fmt]), "load": statistics.median(loads)}
            for fmt in EXPOSURE_FORMATS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secrets", type=int, nargs="+", default=[100_000, 370_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=5, help="runs per size (median and spread reported)")
    parser.add_argument("--max-runs-1m", type=int, help="fewer runs for sizes of 1,000,000 secrets and more")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--filler", type=float, nargs="+", default=[0.0],
                        help="rows without secrets per secret, one table row per value (0: the generator's own)")
    parser.add_argument("--host", nargs="+", choices=("idle", "loaded"), default=["idle"],
                        help="idle: as the machine is; loaded: --workers 0 and one CPU-bound neighbour process")
    parser.add_argument("--workers", help="passed to keyrotate --workers (default: keyrotate decides)")
    parser.add_argument("--no-vacuum", action="store_true", help="pass --no-vacuum to keyrotate rotate")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "keyrotate-bench",
                        help="cache of generated databases and scratch space")
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
        print("| secrets | format | runs | wall (median) | µs/secret | CPU (median) | peak RSS (largest) | load (median) |")
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['secrets']:,} | {r['format']} | {r['runs']} | {r['wall']:.2f} s | {r['us_per_secret']:.1f} "
                  f"| {r['cpu']:.2f} s | {r['peak_rss_mb']:.0f} MB | {r['load']:.1f} |")
        if args.json:
            print(json.dumps(rows, indent=2))
        return
    results = []
    for host in args.host:
        for filler in args.filler:
            for secrets in args.secrets:
                runs = args.runs if args.max_runs_1m is None or secrets < 1_000_000 else min(args.runs, args.max_runs_1m)
                case = Case(secrets, runs, args.seed, filler, host == "loaded", args.workers, not args.no_vacuum)
                results.append(bench_size(args.out, case))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    print_table(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
