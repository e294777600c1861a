#!/usr/bin/env python3
"""Scratch measurements for issue 11: which directions would make a rotation faster.

Each experiment runs its variants in turn (alternating, ``--runs`` times, each on a
fresh copy of the generated database) and prints the median, min and max seconds
of the part it times. The bare loops here are single-core sketches of a design, not
keyrotate's code; (e) runs the real ``keyrotate rotate`` in this process.

    python3 scripts/perf_experiments.py --secrets 370000 --runs 3 a b c d e

a  the proof after the commit: today's (every new value decrypted again on a fresh
   connection, through keyrotate's Scanner) against a keyed digest; and what the
   in-pass check of each new value costs
b  rows in and out of SQLite: executemany UPDATE in batches of 1k/2k/10k/50k
   against one ``UPDATE ... SET col = rekey(col)`` per location (a Python function)
c  VACUUM (then checkpoint) against VACUUM INTO a new file renamed over the old
d  the backup: SQLite's backup API with and without its integrity check, a file
   copy with integrity_check or quick_check, VACUUM INTO; and the pass with the
   backup copied in a thread beside it
e  one real ``keyrotate rotate``: time per phase and a cProfile of the parent
f  the whole ``keyrotate rotate`` command with its default worker pool and with ``--workers 0``
g  a sketch of a pass where one worker reads the old values on its own connection and
   re-encrypts them, and the main process only writes, against the one-core floor
h  writing new texts into a table with several catalogued columns (users): one UPDATE per
   column and 2,000-row range, column after column (today), the same UPDATEs range after
   range (each range's pages stay in the 4 MiB cache), and one UPDATE per range for all its
   columns; no crypto, every value given the same length it had (what a re-encryption does)
i  a lower bound for any rotation with every check on, from parts measured in each run: the floor
   (as the benchmark runs it, in its own process), then on what it rotated one more AES-GCM
   decrypt per new value (the check before commit), the backup with its integrity check (on a
   second copy), and the VACUUM + checkpoint (serial: only a committed database can be compacted).
   Bound = (floor CPU + check + backup) / 2 cores + VACUUM wall, with perfect overlap, no start-up,
   no search, digest, read-back proof or hand-over between processes: each of those only adds.
"""

from __future__ import annotations

import argparse
import binascii
import contextlib
import cProfile
import importlib
import io
import os
import pstats
import resource
import shutil
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from hashlib import blake2b
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import NEW_KEY, ROOT, fresh_copy, prepare  # noqa: E402

from keyrotate.store.backup import backup_database  # noqa: E402
from keyrotate.store.database import PASS_THROUGH_CACHE_KIB, WRITE_CACHE_KIB, quote_identifier  # noqa: E402
from keyrotate.trek.catalogue import Presence, resolve_catalogue  # noqa: E402
from keyrotate.trek.formats import API_PREFIX, IV_BYTES, MIN_SEALED_BYTES, TAG_BYTES, Scheme  # noqa: E402
from keyrotate.trek.keys import Key  # noqa: E402
from keyrotate.trek.schema import inspect_database  # noqa: E402

Timing = tuple[float, float]  # wall seconds, CPU seconds (this process and the children it reaped)
Timed = Callable[[Path], Timing]


# -- a parameterised bare pass -------------------------------------------------------------


def _locations(conn: sqlite3.Connection, db: Path) -> Iterator[tuple[Any, str, str, str, tuple[str, ...]]]:
    info = inspect_database(conn, db)
    for entry in resolve_catalogue(info.schema, info.version):
        loc = entry.location
        if entry.presence is not Presence.ACTIVE or not loc.whole_value:
            continue
        table, column = quote_identifier(loc.table), quote_identifier(loc.column)
        where = f"{column} IS NOT NULL AND {column} != ''"
        params: tuple[str, ...] = ()
        if loc.setting_key is not None:
            where += ' AND "key" = ?'
            params = (loc.setting_key,)
        yield loc, table, column, where, params


def _aeads(old: Key, new: Key, scheme: Scheme) -> tuple[Any, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(old.aes_key(scheme.domain)), AESGCM(new.aes_key(scheme.domain))


def bare_pass(db: Path, old_text: str, *, batch: int = 2000, check: bool = False, digest: str | None = None,
              udf: bool = False, crypto: bool = True) -> int:
    """Decrypt, re-encrypt and write every catalogued whole value in one transaction on one core.

    ``check``: decrypt each new value again (as keyrotate's pass does); ``digest``: also feed a keyed
    BLAKE2b per batch with the plaintexts ("plain") or the new stored values ("cipher");
    ``udf``: one ``UPDATE ... SET col = rekey(col)`` per location instead of batches; without ``crypto``
    every value is written back as it was read (what the row traffic alone costs).
    """
    old, new = Key(old_text, "old"), Key(NEW_KEY, "new")
    a2b, b2a, urandom = binascii.a2b_base64, binascii.b2a_base64, os.urandom
    salt = os.urandom(32)
    fingerprint = 0
    done = 0
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
        locations = list(_locations(conn, db))
        conn.execute("BEGIN IMMEDIATE")
        for loc, table, column, where, params in locations:
            opener, sealer = _aeads(old, new, loc.scheme)
            prefix = API_PREFIX if loc.scheme is Scheme.API else ""
            skip = len(prefix)

            def rekey(value: str, opener: Any = opener, sealer: Any = sealer, prefix: str = prefix,
                      skip: int = skip) -> str:
                if not value.startswith(prefix):
                    return value
                sealed = a2b(value[skip:])
                plaintext = opener.decrypt(sealed[:IV_BYTES], sealed[MIN_SEALED_BYTES:] + sealed[IV_BYTES:MIN_SEALED_BYTES], None)
                iv = urandom(IV_BYTES)
                out = sealer.encrypt(iv, plaintext, None)
                if check and sealer.decrypt(iv, out, None) != plaintext:
                    raise AssertionError("did not read back")
                return prefix + b2a(iv + out[-TAG_BYTES:] + out[:-TAG_BYTES], newline=False).decode()

            if udf:
                conn.create_function("rekey", 1, rekey)
                done += conn.execute(f"UPDATE {table} SET {column} = rekey({column}) WHERE {where}", params).rowcount
                continue
            select = f"SELECT rowid, {column} FROM {table} WHERE rowid > ? AND {where} ORDER BY rowid LIMIT {batch}"
            update = f"UPDATE {table} SET {column} = ? WHERE rowid = ?"
            last = -(2**63)
            while rows := conn.execute(select, (last, *params)).fetchall():
                last = rows[-1][0]
                ivs = urandom(IV_BYTES * len(rows))
                updates = []
                records = []
                if not crypto:
                    conn.executemany(update, [(value, rowid) for rowid, value in rows])
                    done += len(rows)
                    continue
                for n, (rowid, value) in enumerate(rows):
                    if not value.startswith(prefix):
                        continue
                    sealed = a2b(value[skip:])
                    plaintext = opener.decrypt(sealed[:IV_BYTES], sealed[MIN_SEALED_BYTES:] + sealed[IV_BYTES:MIN_SEALED_BYTES], None)
                    iv = ivs[n * IV_BYTES : (n + 1) * IV_BYTES]
                    out = sealer.encrypt(iv, plaintext, None)
                    if check and sealer.decrypt(iv, out, None) != plaintext:
                        raise AssertionError("did not read back")
                    new_value = prefix + b2a(iv + out[-TAG_BYTES:] + out[:-TAG_BYTES], newline=False).decode()
                    updates.append((new_value, rowid))
                    if digest == "plain":
                        records.append(b"%d\x00%d\x00%s" % (rowid, len(plaintext), plaintext))
                    elif digest == "cipher":
                        records.append(b"%d\x00%s\x00" % (rowid, new_value.encode()))
                if records:
                    fingerprint ^= int.from_bytes(blake2b(b"".join(records), key=salt, digest_size=16).digest(), "big")
                conn.executemany(update, updates)
                done += len(updates)
        conn.execute("COMMIT")
    return done


def bare_proof(db: Path, *, decrypt: bool, batch: int = 2000) -> int:
    """Read every catalogued whole value on a fresh connection and digest it: decrypted under the new
    key (``decrypt``), or the stored text as it is (no AES, no base64)."""
    new = Key(NEW_KEY, "new")
    a2b = binascii.a2b_base64
    salt = os.urandom(32)
    fingerprint = count = 0
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        locations = list(_locations(conn, db))
        conn.execute("BEGIN")
        for loc, table, column, where, params in locations:
            _, opener = _aeads(new, new, loc.scheme)
            skip = len(API_PREFIX) if loc.scheme is Scheme.API else 0
            select = f"SELECT rowid, {column} FROM {table} WHERE rowid > ? AND {where} ORDER BY rowid LIMIT {batch}"
            last = -(2**63)
            while rows := conn.execute(select, (last, *params)).fetchall():
                last = rows[-1][0]
                if decrypt:
                    records = []
                    for rowid, value in rows:
                        if skip and not value.startswith(API_PREFIX):  # legacy plaintext: as it is
                            records.append(b"%d\x00%s" % (rowid, value.encode()))
                            continue
                        sealed = a2b(value[skip:])
                        plaintext = opener.decrypt(sealed[:IV_BYTES], sealed[MIN_SEALED_BYTES:] + sealed[IV_BYTES:MIN_SEALED_BYTES], None)
                        records.append(b"%d\x00%d\x00%s" % (rowid, len(plaintext), plaintext))
                    data = b"".join(records)
                else:
                    data = "".join(f"{rowid}\x00{value}\x00" for rowid, value in rows).encode()
                fingerprint ^= int.from_bytes(blake2b(data, key=salt, digest_size=16).digest(), "big")
                count += len(rows)
        conn.execute("ROLLBACK")
    return count


def scanner_proof(db: Path, old_text: str, workers: int) -> Timing:
    """The decrypting proof after the commit (before issue 11's stored digest), through keyrotate's own Scanner.
    The CPU figure includes the worker's whole life (start-up too); the wall figure leaves out the pool's start
    and stop."""
    from keyrotate.rotation.scanning import Scanner
    from keyrotate.rotation.workers import CryptoPool
    from keyrotate.store.database import connect
    from keyrotate.trek.formats import Keyring

    keys = (Key(NEW_KEY, "new"), Key(old_text, "old"))
    cpu = _cpu()
    pool = CryptoPool(keys, workers) if workers else None
    try:
        started = time.perf_counter()
        with closing(connect(db)) as conn:
            info = inspect_database(conn, db)
            resolved = resolve_catalogue(info.schema, info.version)
            conn.execute("BEGIN")
            Scanner(conn, info, resolved, Keyring(keys), pool=pool,
                    discovery_tables=frozenset(), count_empty=False).run("verify")
            conn.execute("ROLLBACK")
        wall = time.perf_counter() - started
    finally:
        if pool is not None:
            pool.close()
    return wall, _cpu() - cpu


# -- running variants -----------------------------------------------------------------------


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work: Callable[[], object]) -> Timing:
    started, cpu = time.perf_counter(), _cpu()
    work()
    return time.perf_counter() - started, _cpu() - cpu


def alternate(title: str, variants: dict[str, Timed], source: Path, work: Path, runs: int) -> None:
    seconds: dict[str, list[Timing]] = {name: [] for name in variants}
    for run in range(runs):
        for name, variant in variants.items():
            db = fresh_copy(source, work)
            seconds[name].append(variant(db))
        print(f"  {title}: run {run + 1}/{runs} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(f"\n### {title} (median of {runs}, min–max)\n")
    print("| variant | wall s (min–max) | CPU s (min–max) |")
    print("| --- | ---: | ---: |")
    for name, values in seconds.items():
        walls, cpus = [v[0] for v in values], [v[1] for v in values]
        print(f"| {name} | {statistics.median(walls):.3f} ({min(walls):.3f}–{max(walls):.3f}) "
              f"| {statistics.median(cpus):.3f} ({min(cpus):.3f}–{max(cpus):.3f}) |")
    sys.stdout.flush()


def old_key(source: Path) -> str:
    return (source / "data" / ".encryption_key").read_text().strip()


def after_rotation(key: str, measure: Timed) -> Timed:
    """``measure`` timed on a database the bare pass has just rotated (the pass itself untimed)."""
    def variant(db: Path) -> Timing:
        bare_pass(db, key)
        return measure(db)
    return variant


def experiment_a(source: Path, work: Path, runs: int) -> None:
    key = old_key(source)
    alternate("a: the proof after the commit, on the rotated database", {
        "today: Scanner, every new value decrypted, 1 worker": after_rotation(key, lambda db: scanner_proof(db, key, 1)),
        "today: Scanner, no worker": after_rotation(key, lambda db: scanner_proof(db, key, 0)),
        "bare: decrypt + keyed BLAKE2b of plaintexts, 1 core": after_rotation(key,
            lambda db: timed(lambda: bare_proof(db, decrypt=True))),
        "bare: keyed BLAKE2b of stored ciphertexts, no AES, 1 core": after_rotation(key,
            lambda db: timed(lambda: bare_proof(db, decrypt=False))),
    }, source, work, runs)
    alternate("a: the pass, one core (what each check adds to the floor)", {
        "floor (decrypt, encrypt, write)": lambda db: timed(lambda: bare_pass(db, key)),
        "+ decrypt each new value again (today's in-pass check)": lambda db: timed(lambda: bare_pass(db, key, check=True)),
        "+ check + digest of plaintexts (today's pass)": lambda db: timed(
            lambda: bare_pass(db, key, check=True, digest="plain")),
        "+ check + digest of new ciphertexts": lambda db: timed(lambda: bare_pass(db, key, check=True, digest="cipher")),
    }, source, work, runs)


def experiment_b(source: Path, work: Path, runs: int) -> None:
    key = old_key(source)
    variants: dict[str, Timed] = {
        f"executemany UPDATE, batches of {size:,}": (lambda db, size=size: timed(lambda: bare_pass(db, key, batch=size)))
        for size in (1000, 2000, 10_000, 50_000)
    }
    variants["UPDATE t SET col = rekey(col), one per location"] = lambda db: timed(lambda: bare_pass(db, key, udf=True))
    variants["row traffic alone: batches of 2,000 written back unchanged, no crypto"] = lambda db: timed(
        lambda: bare_pass(db, key, crypto=False))
    alternate("b: rows through Python vs a function inside SQLite (one core, no check)", variants, source, work, runs)


def _vacuum_in_place(db: Path) -> Timing:
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA secure_delete = ON")
        return timed(lambda: (conn.execute("VACUUM"), conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")))


def _vacuum_into(db: Path) -> Timing:
    return timed(lambda: _vacuum_into_work(db))


def _vacuum_into_work(db: Path) -> None:
    target = db.with_name(db.name + ".vacuumed")
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("VACUUM INTO ?", (str(target),))
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.replace(target, db)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{db}-wal")


def experiment_c(source: Path, work: Path, runs: int) -> None:
    key = old_key(source)
    alternate("c: compacting the rotated database", {
        "VACUUM + wal_checkpoint(TRUNCATE) (today)": after_rotation(key, _vacuum_in_place),
        "VACUUM INTO new file + fsync + rename over": after_rotation(key, _vacuum_into),
    }, source, work, runs)


def _file_copy_checked(db: Path, pragma: str) -> Timing:
    return timed(lambda: _file_copy_work(db, pragma))


def _file_copy_work(db: Path, pragma: str) -> None:
    target = db.with_name("copy.db")
    shutil.copyfile(db, target)
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    with closing(sqlite3.connect(target)) as conn:
        conn.execute(f"PRAGMA {pragma}").fetchall()


def _backup_api(db: Path, integrity: bool) -> Timing:
    return timed(lambda: _backup_api_work(db, integrity))


def _backup_api_work(db: Path, integrity: bool) -> None:
    target = db.with_name("copy.db")
    if integrity:
        backup_database(db, target)
    else:
        with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(target, isolation_level=None)) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")


def _vacuum_into_checked(db: Path) -> Timing:
    return timed(lambda: _vacuum_into_checked_work(db))


def _vacuum_into_checked_work(db: Path) -> None:
    target = db.with_name("copy.db")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("VACUUM INTO ?", (str(target),))
    with closing(sqlite3.connect(target)) as conn:
        conn.execute("PRAGMA integrity_check").fetchall()


def _integrity_only(db: Path, pragma: str) -> Timing:
    with closing(sqlite3.connect(db)) as conn:
        return timed(lambda: conn.execute(f"PRAGMA {pragma}").fetchall())


def _pass_with_backup_beside(db: Path, key: str) -> Timing:
    """The pass while a thread copies the backup (as keyrotate does on WAL databases): wall of both."""
    def both() -> None:
        copy = threading.Thread(target=backup_database, args=(db, db.with_name("copy.db")))
        copy.start()
        bare_pass(db, key)
        copy.join()
    return timed(both)


def _pass_then_backup(db: Path, key: str) -> Timing:
    return timed(lambda: (backup_database(db, db.with_name("copy.db")), bare_pass(db, key)))


def experiment_d(source: Path, work: Path, runs: int) -> None:
    key = old_key(source)
    alternate("d: the backup copy", {
        "backup API + integrity_check (today's backup_database)": lambda db: _backup_api(db, True),
        "backup API, no check": lambda db: _backup_api(db, False),
        "file copy + fsync + integrity_check": lambda db: _file_copy_checked(db, "integrity_check"),
        "file copy + fsync + quick_check": lambda db: _file_copy_checked(db, "quick_check"),
        "VACUUM INTO + integrity_check": _vacuum_into_checked,
        "integrity_check alone (of the source)": lambda db: _integrity_only(db, "integrity_check"),
        "quick_check alone (of the source)": lambda db: _integrity_only(db, "quick_check"),
    }, source, work, runs)
    alternate("d: the backup beside the pass (one-core pass, backup thread)", {
        "backup, then pass": lambda db: _pass_then_backup(db, key),
        "pass with the backup in a thread beside it": lambda db: _pass_with_backup_beside(db, key),
        "pass alone": lambda db: timed(lambda: bare_pass(db, key)),
    }, source, work, runs)


# -- (e) one real rotation ---------------------------------------------------------------------


def rotate_phases(db: Path, key_file: Path, work: Path, profile: bool) -> tuple[list[tuple[str, float]], str]:
    """Run the real CLI in this process; (phase, seconds) in order, and the cProfile text when asked."""
    from keyrotate import crashpoints
    from keyrotate.cli.app import main as cli_main

    marks: list[tuple[str, float]] = []
    stamp = time.perf_counter

    def wrap(module: str, name: str, label: str) -> None:
        """Time ``module.name`` (a function, or ``Class.method``) wherever keyrotate bound it; skip what moved."""
        owner: Any = importlib.import_module(module)
        *outer, attr = name.split(".")
        for part in outer:
            owner = getattr(owner, part, None)
        original = getattr(owner, attr, None)
        if original is None:
            print(f"(not timed: {module}.{name} is gone)", file=sys.stderr)
            return

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            thread = threading.current_thread().name
            shown = label if thread == "MainThread" else f"{label} [{thread}]"
            marks.append((f"{shown} start", stamp()))
            try:
                return original(*args, **kwargs)
            finally:
                marks.append((f"{shown} end", stamp()))
        if outer:
            setattr(owner, attr, wrapper)
            return
        for loaded in list(sys.modules.values()):
            if getattr(loaded, "__name__", "").startswith("keyrotate") and getattr(loaded, attr, None) is original:
                setattr(loaded, attr, wrapper)

    crashpoints.observe(lambda point: marks.append((point, stamp())))
    wrap("keyrotate.store.processes", "refuse_if_open_elsewhere", "process check")
    wrap("keyrotate.rotation.workers", "CryptoPool.__init__", "worker start")
    wrap("keyrotate.rotation.workers", "CryptoPool.close", "worker stop")
    wrap("keyrotate.store.integrity", "check_integrity", "integrity check")
    wrap("keyrotate.store.backup", "backup_database", "backup copy+check")
    wrap("keyrotate.rotation.scanning", "Scanner.run", "scanner pass")
    wrap("keyrotate.rotation.discovery", "DiscoverySearch._search", "stray-token search")
    wrap("keyrotate.rotation.after_commit", "scrub_after_commit", "VACUUM + checkpoint")
    wrap("keyrotate.rotation.after_commit", "verify_after_commit", "proof on a fresh connection")
    new_key = work / "new.key"
    new_key.write_text(NEW_KEY + "\n")
    new_key.chmod(0o600)
    args = ["rotate", "--db", str(db), "--old-key-file", str(key_file), "--new-key-file", str(new_key),
            "--backup", str(work / "backup.db"), "--json"]
    profiler = cProfile.Profile() if profile else None
    started = stamp()
    marks.append(("start", started))
    with contextlib.redirect_stdout(io.StringIO()):
        if profiler is not None:
            profiler.enable()
        try:
            cli_main(args, standalone_mode=False)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
        finally:
            if profiler is not None:
                profiler.disable()
    marks.append(("end", stamp()))
    text = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(22)
        text = out.getvalue()
    return [(name, at - started) for name, at in marks], text


def experiment_e(source: Path, work: Path, runs: int) -> None:
    import subprocess
    for profile in (False, True):
        db = fresh_copy(source, work)
        command = [sys.executable, str(Path(__file__).resolve()), "--phases", str(db),
                   "--key-file", str(source / "data" / ".encryption_key")] + (["--profile"] if profile else [])
        started = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
        wall = time.perf_counter() - started
        print(f"\n### e: one `keyrotate rotate` in this process{' under cProfile' if profile else ''} "
              f"(process wall {wall:.2f} s)\n")
        print(out)


def _reading_worker(db: str, old_text: str, batch: int, out: Any) -> None:
    """Sketch: a worker that reads the old values itself (its own read snapshot), re-encrypts them and
    sends back only (location, rowids, new values joined by NUL)."""
    old, new = Key(old_text, "old"), Key(NEW_KEY, "new")
    a2b, b2a, urandom = binascii.a2b_base64, binascii.b2a_base64, os.urandom
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        locations = list(_locations(conn, Path(db)))
        conn.execute("BEGIN")
        for index, (loc, table, column, where, params) in enumerate(locations):
            opener, sealer = _aeads(old, new, loc.scheme)
            prefix = API_PREFIX if loc.scheme is Scheme.API else ""
            skip = len(prefix)
            select = f"SELECT rowid, {column} FROM {table} WHERE rowid > ? AND {where} ORDER BY rowid LIMIT {batch}"
            last = -(2**63)
            while rows := conn.execute(select, (last, *params)).fetchall():
                last = rows[-1][0]
                ivs = urandom(IV_BYTES * len(rows))
                rowids, values = [], []
                for n, (rowid, value) in enumerate(rows):
                    if not value.startswith(prefix):
                        continue
                    sealed = a2b(value[skip:])
                    plaintext = opener.decrypt(sealed[:IV_BYTES], sealed[MIN_SEALED_BYTES:] + sealed[IV_BYTES:MIN_SEALED_BYTES], None)
                    iv = ivs[n * IV_BYTES : (n + 1) * IV_BYTES]
                    sealed_new = sealer.encrypt(iv, plaintext, None)
                    if sealer.decrypt(iv, sealed_new, None) != plaintext:
                        raise AssertionError("did not read back")
                    values.append(prefix + b2a(iv + sealed_new[-TAG_BYTES:] + sealed_new[:-TAG_BYTES], newline=False).decode())
                    rowids.append(rowid)
                out.send((index, rowids, "\x00".join(values)))
        conn.execute("ROLLBACK")
    out.send(None)


def reading_worker_pass(db: Path, old_text: str, batch: int = 2000) -> int:
    """Sketch of a 2-core pass: one worker reads and re-encrypts, this process only writes."""
    import multiprocessing
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    done = 0
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
        updates = [f"UPDATE {table} SET {column} = ? WHERE rowid = ?" for _, table, column, _, _ in _locations(conn, db)]
        conn.execute("BEGIN IMMEDIATE")
        worker = context.Process(target=_reading_worker, args=(str(db), old_text, batch, send))
        worker.start()
        send.close()
        while (message := receive.recv()) is not None:
            index, rowids, joined = message
            if rowids:
                conn.executemany(updates[index], zip(joined.split("\x00"), rowids, strict=True))
                done += len(rowids)
        worker.join()
        conn.execute("COMMIT")
    return done


def experiment_g(source: Path, work: Path, runs: int) -> None:
    key = old_key(source)
    alternate("g: a worker that reads for itself (sketch) against the floor", {
        "floor (one core)": lambda db: timed(lambda: bare_pass(db, key)),
        "1 worker reads + re-encrypts + checks, parent only writes": lambda db: timed(
            lambda: reading_worker_pass(db, key)),
    }, source, work, runs)


def experiment_f(source: Path, work: Path, runs: int) -> None:
    """The real CLI in a subprocess, with keyrotate's default worker pool and with none."""
    from benchmark import run_measured

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ENCRYPTION_KEY", None)

    def rotate(workers: list[str]) -> Timed:
        def variant(db: Path) -> Timing:
            new_key = work / "new.key"
            m = run_measured([sys.executable, "-m", "keyrotate", "rotate", "--db", str(db), "--old-key-file",
                              str(source / "data" / ".encryption_key"), "--new-key-file", str(new_key),
                              "--backup", str(work / "backup.db"), "--json", *workers], env)
            return m.wall, m.cpu
        return variant

    alternate("f: keyrotate rotate (whole command), with and without its worker pool", {
        "default (1 worker on 2 cores)": rotate([]),
        "--workers 0": rotate(["--workers", "0"]),
    }, source, work, runs)


def _table_writes(db: Path, order: str, rows_per_range: int = 2000) -> Timing:
    """Every whole-value column of ``users`` rewritten: ``order`` is "columns", "ranges" or "together" (see h)."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
        conn.execute("PRAGMA secure_delete = ON")
        columns = [column for loc, table, column, _, _ in _locations(conn, db)
                   if table == '"users"' and loc.setting_key is None]
        conn.create_function("changed", 1, lambda v: v if not v else v[:-1] + ("A" if v[-1] != "A" else "B"),
                             deterministic=True)
        ends = [r[0] for r in conn.execute("SELECT rowid FROM users ORDER BY rowid")][rows_per_range - 1::rows_per_range]

        bounds = list(zip([-(2**63), *(end + 1 for end in ends)], [*ends, 2**63 - 1], strict=True))

        def one(column: str, first: int, last: int) -> None:
            conn.execute(f"UPDATE users SET {column} = changed({column}) WHERE rowid BETWEEN ? AND ? "
                         f"AND {column} IS NOT NULL AND {column} != ''", (first, last))

        def write() -> None:
            conn.execute("BEGIN IMMEDIATE")
            if order == "columns":
                for column in columns:
                    for first, last in bounds:
                        one(column, first, last)
            elif order == "ranges":
                for first, last in bounds:
                    for column in columns:
                        one(column, first, last)
            else:
                sets = ", ".join(f"{c} = changed({c})" for c in columns)
                for first, last in bounds:
                    conn.execute(f"UPDATE users SET {sets} WHERE rowid BETWEEN ? AND ?", (first, last))
            conn.execute("COMMIT")
        return timed(write)


def experiment_h(source: Path, work: Path, runs: int) -> None:
    alternate("h: a wide table's catalogued columns written (users; no crypto)", {
        "one UPDATE per column and range, column after column (today)": lambda db: _table_writes(db, "columns"),
        "the same UPDATEs, range after range": lambda db: _table_writes(db, "ranges"),
        "one UPDATE per range for all the columns": lambda db: _table_writes(db, "together"),
    }, source, work, runs)


# -- (i) a lower bound ------------------------------------------------------------------------------


def _check_cpu(db: Path) -> float:
    """CPU of one AES-GCM decrypt of every whole value now under the new key (read first, untimed)."""
    new = Key(NEW_KEY, "new")
    a2b = binascii.a2b_base64
    sealed_values: list[tuple[Any, bytes]] = []
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for loc, table, column, where, params in list(_locations(conn, db)):
            _, opener = _aeads(new, new, loc.scheme)
            skip = len(API_PREFIX) if loc.scheme is Scheme.API else 0
            for (value,) in conn.execute(f"SELECT {column} FROM {table} WHERE {where}", params):
                if not skip or value.startswith(API_PREFIX):
                    sealed_values.append((opener.decrypt, a2b(value[skip:])))
    cpu = _cpu()
    for decrypt, sealed in sealed_values:
        decrypt(sealed[:IV_BYTES], sealed[MIN_SEALED_BYTES:] + sealed[IV_BYTES:MIN_SEALED_BYTES], None)
    return _cpu() - cpu


def _compact(db: Path) -> float:
    """Wall of keyrotate's compaction step: VACUUM then emptying the -wal."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA cache_size = -{PASS_THROUGH_CACHE_KIB}")
        started = time.perf_counter()
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return time.perf_counter() - started


def experiment_i(source: Path, work: Path, runs: int) -> None:
    from benchmark import measured_env, run_measured

    key_file = source / "data" / ".encryption_key"
    rows: list[dict[str, float]] = []
    for run in range(runs):
        db = fresh_copy(source, work)
        floor = run_measured([sys.executable, str(Path(__file__).resolve().parent / "benchmark.py"), "--floor",
                              str(db), "--old-key-file", str(key_file)], measured_env())
        check = _check_cpu(db)
        vacuum = _compact(db)
        backup = _backup_api(fresh_copy(source, work), True)[1]
        bound = (floor.cpu + check + backup) / 2 + vacuum
        rows.append({"floor wall": floor.wall, "floor CPU": floor.cpu, "check CPU": check, "backup CPU": backup,
                     "VACUUM wall": vacuum, "bound wall": bound, "bound / floor": bound / floor.wall})
        print(f"  i: run {run + 1}/{runs}: floor {floor.wall:.2f} s, bound {bound:.2f} s, "
              f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(f"\n### i: a lower bound for a rotation with every check on, 2 cores (median of {runs}, min–max)\n")
    print("| part | median (min–max) |")
    print("| --- | ---: |")
    for name in rows[0]:
        values = [row[name] for row in rows]
        unit = "x" if "/" in name else " s"
        print(f"| {name} | {statistics.median(values):.2f}{unit} ({min(values):.2f}–{max(values):.2f}) |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", default=["a", "b", "c", "d", "e"])
    parser.add_argument("--secrets", type=int, default=370_000)
    parser.add_argument("--filler", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/keyrotate-bench"))
    parser.add_argument("--phases", type=Path, help=argparse.SUPPRESS)  # internal: (e) on this database
    parser.add_argument("--key-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases is not None:
        marks, profile = rotate_phases(args.phases, args.key_file, args.phases.parent.parent, args.profile)
        for name, at in marks:
            print(f"{at:8.3f} s  {name}")
        print(profile)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    source, info = prepare(args.out, args.secrets, 0, args.filler)
    print(f"database: {info['secrets']:,} secrets, {(source / 'data' / 'travel.db').stat().st_size / 1e6:.0f} MB; "
          f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    work = Path(os.path.join(args.out, f"experiments-{os.getpid()}"))
    try:
        for name in args.experiments:
            {"a": experiment_a, "b": experiment_b, "c": experiment_c, "d": experiment_d,
             "e": experiment_e, "f": experiment_f, "g": experiment_g, "h": experiment_h,
             "i": experiment_i}[name](source, work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
