"""A running TREK: another process holding the database open, or writing to it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.errors import ExitCode
from keyrotate.rotation.verify import verify_database
from keyrotate.store.processes import processes_holding
from keyrotate.trek.keys import Key

from .conftest import TrekCopy, listing, table_dump
from .crashkit import environment, make_scenario

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")

# A stand-in for TREK: opens the database, says "ready", then does what it is told on stdin.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("PRAGMA journal_mode=WAL")
if sys.argv[2] == "lock":
    conn.execute("BEGIN IMMEDIATE")
print("ready", flush=True)
sys.stdin.read()
"""

# Writes in a loop (each write its own transaction, as TREK does) until stdin closes,
# then prints how many writes committed.
WRITER = """
import sqlite3, sys, threading, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=120)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
n = 0
while not stop.is_set() or n < 20:
    n += 1
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO trips (user_id, title, description) VALUES (1, ?, 'written while rotating')",
                 (f"writer-{n}",))
    conn.execute("UPDATE users SET email = ? WHERE id = 1 + ? % 5", (f"writer-{n}@example.org", n))
    conn.execute("COMMIT")
    time.sleep(0.002)  # as TREK does between requests; lets a waiting writer get the lock
    if n == 20:
        print("ready", flush=True)
print(n, flush=True)
"""


@contextmanager
def other_process(script: str, db: Path, mode: str = "") -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", script, str(db), mode], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def rotate(trek: TrekCopy, new_key_file: Path, *extra: str) -> object:
    return CliRunner().invoke(
        main, ["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(new_key_file), "--yes", *extra],
        catch_exceptions=False,
    )


def test_a_process_holding_the_database_is_found_and_the_rotation_refused(trek4: TrekCopy, new_key_file: Path) -> None:
    before, files = table_dump(trek4.db), listing(trek4.data_dir)
    with other_process(HOLDER, trek4.db, "idle") as holder:
        assert holder.pid in {h.pid for h in processes_holding(trek4.db)}
        result = rotate(trek4, new_key_file)
        assert result.exit_code == ExitCode.DATABASE_BUSY, result.output
        assert f"pid {holder.pid}" in result.output
        assert "TREK must be stopped" in result.output and "--allow-running" in result.output
        files_while_open = listing(trek4.data_dir)
    assert table_dump(trek4.db) == before
    assert files_while_open - files <= {"travel.db-wal", "travel.db-shm"}  # the holder's, not ours
    assert not processes_holding(trek4.db)


def test_allow_running_rotates_next_to_an_idle_reader(trek4: TrekCopy, new_key_file: Path) -> None:
    with other_process(HOLDER, trek4.db, "idle"):
        result = rotate(trek4, new_key_file, "--allow-running")
    assert result.exit_code == 0, result.output


def test_a_held_write_lock_is_waited_for_then_refused_cleanly(trek4: TrekCopy, new_key_file: Path) -> None:
    before = table_dump(trek4.db)
    with other_process(HOLDER, trek4.db, "lock"):
        result = rotate(trek4, new_key_file, "--allow-running", "--wait", "0.3")
        leftovers = [p.name for p in trek4.data_dir.iterdir() if "keyrotate" in p.name]
    assert result.exit_code == ExitCode.DATABASE_BUSY, result.output
    assert "waiting up to 0.3 s" in result.output
    assert "locked by another program" in result.output
    assert leftovers == []  # no backup was made for a run that wrote nothing
    assert table_dump(trek4.db) == before
    assert (trek4.data_dir / ".encryption_key").read_text().strip() == trek4.key.reveal()


def test_a_concurrent_writer_loses_nothing_and_the_result_is_on_one_key(trek4: TrekCopy, new_key_file: Path) -> None:
    old_key = trek4.key
    with other_process(WRITER, trek4.db) as writer:
        result = rotate(trek4, new_key_file, "--allow-running", "--wait", "60")
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.close()
        writes = int(writer.stdout.read().strip())
        assert writer.wait() == 0
    assert result.exit_code == 0, result.output
    with closing(sqlite3.connect(trek4.db)) as conn:
        titles = {row[0] for row in conn.execute("SELECT title FROM trips WHERE title LIKE 'writer-%'")}
        emails = {row[0] for row in conn.execute("SELECT email FROM users WHERE id BETWEEN 1 AND 5")}
        assert [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
    assert titles == {f"writer-{n}" for n in range(1, writes + 1)}  # no lost write
    # The last update of each of users 1..5 survived the rotation's rewrite of those rows.
    assert emails == {f"writer-{n}@example.org" for n in range(writes - 4, writes + 1)}
    new_key = (trek4.data_dir / ".encryption_key").read_text().strip()
    assert new_key == new_key_file.read_text().strip()
    report = verify_database(trek4.db, [Key(new_key, "new"), old_key])
    assert report.ok and report.catalogued_tokens == len(trek4.encrypted_entries())
    assert report.to_json()["totals"]["open_under_other_keys"] == 0


def test_a_process_holding_the_database_by_another_path_is_found(trek4: TrekCopy, new_key_file: Path) -> None:
    """TREK in a container opens the file as /app/data/travel.db: the same file under another name (here a hard
    link) used to pass the check, which compared the text of /proc/PID/fd links, and the rotation went ahead."""
    other_name = trek4.data_dir.parent / "seen-from-a-container.db"
    other_name.hardlink_to(trek4.db)
    before = table_dump(trek4.db)
    holder_script = "import sys; f = open(sys.argv[1], 'rb'); print('ready', flush=True); sys.stdin.read()"
    with other_process(holder_script, other_name) as holder:
        assert holder.pid in {h.pid for h in processes_holding(trek4.db)}
        result = rotate(trek4, new_key_file)
    assert result.exit_code == ExitCode.DATABASE_BUSY, result.output
    assert f"pid {holder.pid}" in result.output
    assert table_dump(trek4.db) == before


def test_a_process_that_opens_the_database_during_the_pass_stops_the_commit(tmp_path: Path) -> None:
    """The check at the start is not enough: a TREK started while the pass runs would write secrets under the
    old key right after the COMMIT (its writes wait for the lock). Looked for again before the COMMIT: rolled
    back, exit 10 (keyrotate's own crypto worker, which read the database in the pass, is not found there)."""
    scenario = make_scenario(tmp_path, users=4)
    before, key_text = table_dump(scenario.db), (scenario.data_dir / ".encryption_key").read_text()
    marker, go = tmp_path / "paused", tmp_path / "go"
    args = ["rotate", "--data-dir", str(scenario.data_dir), "--new-key-file", str(scenario.new_key_path),
            "--workers", "1", "--yes"]
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", "before-commit", str(marker), str(go), *args],
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, process.communicate()
    holder_script = "import sys; f = open(sys.argv[1], 'rb'); print('ready', flush=True); sys.stdin.read()"
    with other_process(holder_script, scenario.db) as holder:
        go.touch()
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == ExitCode.DATABASE_BUSY, stderr
    assert f"pid {holder.pid}" in stderr and "Nothing was changed" in stderr
    assert table_dump(scenario.db) == before
    assert (scenario.data_dir / ".encryption_key").read_text() == key_text
    assert not [p.name for p in scenario.data_dir.iterdir() if "keyrotate" in p.name]  # no backup left behind
