"""Kill a real ``keyrotate rotate`` with SIGKILL and check what it leaves behind.

Shared by ``tests/test_crash_safety.py`` (fast, deterministic kill points) and
``scripts/crash_harness.py`` (the long mode: bigger databases, kills at random
moments, which also land inside SQLite's COMMIT).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyrotate.trek.formats import Scheme
from keyrotate.trek.keys import Key, create_key_file
from keyrotate.trek.sample import add_plugin_users, build_sample_database

from .conftest import stored_value
from .kill_at import KILL_VARIABLE, MARK_VARIABLE
from .trek_text import decrypt_text

REPO_ROOT = Path(__file__).resolve().parent.parent
OLD_TEXT = "crash-harness-old-key-0123456789abcdef"
NEW_TEXT = "crash-harness-new-key-fedcba9876543210"


@dataclass
class Scenario:
    data_dir: Path
    new_key_path: Path
    secrets: list[dict[str, Any]]
    old_key: Key = field(default_factory=lambda: Key(OLD_TEXT, "harness old key"))
    new_key: Key = field(default_factory=lambda: Key(NEW_TEXT, "harness new key"))

    @property
    def db(self) -> Path:
        return self.data_dir / "travel.db"

    @property
    def key_file(self) -> Path:
        return self.data_dir / ".encryption_key"


def make_scenario(root: Path, *, users: int = 30, photos_per_user: float = 2.4, seed: int = 1,
                  journal_mode: str = "wal") -> Scenario:
    data = root / "data"
    data.mkdir(parents=True)
    create_key_file(data / ".encryption_key", OLD_TEXT)
    os.chmod(data / ".encryption_key", 0o600)
    new_key_path = root / "new.key"
    create_key_file(new_key_path, NEW_TEXT)
    old = Key(OLD_TEXT, "harness old key")
    sample = build_sample_database(data / "travel.db", old, users=users, photos_per_user=photos_per_user, seed=seed)
    extra = add_plugin_users(data / "travel.db", old, range(1, min(users, 8) + 1), seed=seed)
    if journal_mode != "wal":
        with closing(sqlite3.connect(data / "travel.db")) as conn:
            conn.execute(f"PRAGMA journal_mode={journal_mode}")
    secrets = [vars(s) for s in [*sample.secrets, *extra] if s.scheme in ("api", "mfa")]
    return Scenario(data, new_key_path, secrets)


def rotate_command(scenario: Scenario, *, armed: bool = False) -> list[str]:
    """The real CLI; ``armed``: through tests/kill_at.py, which reads the kill and mark variables."""
    return [sys.executable, "-m", "tests.kill_at" if armed else "keyrotate", "rotate", "--data-dir", str(scenario.data_dir),
            "--new-key-file", str(scenario.new_key_path), "--yes", "--quiet"]


def environment(kill_at: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop(KILL_VARIABLE, None)
    env.pop(MARK_VARIABLE, None)
    if kill_at:
        env[KILL_VARIABLE] = kill_at
    return env


def run_rotation(scenario: Scenario, kill_at: str | None = None, *, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    command = rotate_command(scenario, armed=kill_at is not None)
    command = command if quiet else command[:-1]
    return subprocess.run(command, env=environment(kill_at), capture_output=True, text=True, timeout=600, check=False)


def run_and_kill_after(scenario: Scenario, seconds: float, *, from_point: str | None = None) -> int:
    """Start a rotation and SIGKILL it ``seconds`` after it starts (or after it reaches ``from_point``)."""
    env = environment()
    marker = scenario.data_dir.parent / "reached"
    if from_point:
        env[MARK_VARIABLE] = f"{from_point}:{marker}"
    process = subprocess.Popen(rotate_command(scenario, armed=from_point is not None), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while from_point and not marker.exists() and process.poll() is None:
        time.sleep(0.001)
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait()


@dataclass(frozen=True)
class State:
    """What a kill left: problems found (empty = consistent) and which key the data is under."""

    problems: tuple[str, ...]
    under: str | None  # "old" | "new" | None when mixed or unreadable
    key_file: str  # "old" | "new" | "other"


def inspect(scenario: Scenario) -> State:
    problems: list[str] = []
    under: set[str] = set()
    try:
        with closing(sqlite3.connect(scenario.db)) as conn:
            check = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            if check != ["ok"]:
                problems.append(f"integrity_check: {check[:3]}")
            for secret in scenario.secrets:
                scheme = Scheme.MFA if secret["scheme"] == "mfa" else Scheme.API
                stored = stored_value(conn, secret)
                opens = [name for name, key in (("old", scenario.old_key), ("new", scenario.new_key))
                         if isinstance(stored, str) and decrypt_text(stored, key, scheme) == secret["plaintext"]]
                if len(opens) != 1:
                    problems.append(f"{secret['table']}.{secret['column']} {secret['key']} opens under {opens}")
                under.update(opens)
    except sqlite3.Error as exc:
        problems.append(f"sqlite: {exc}")
    if len(under) > 1:
        problems.append("secrets under both keys")
    try:
        text = scenario.key_file.read_text().strip()
    except OSError:
        text = ""
    key_file = {OLD_TEXT: "old", NEW_TEXT: "new"}.get(text, "other")
    if key_file == "other":
        problems.append("data/.encryption_key holds neither key")
    for path in scenario.data_dir.iterdir():
        # travel.db (and its -wal/-shm, which SQLite gives the same mode) belong to TREK, not keyrotate.
        if (not path.name.startswith("travel.db") or ".keyrotate" in path.name) and path.stat().st_mode & 0o077:
            problems.append(f"{path.name} is readable by others ({path.stat().st_mode & 0o777:o})")
    return State(tuple(problems), under.pop() if len(under) == 1 else None, key_file)


@dataclass
class KillResult:
    label: str
    killed: bool  # False when the run finished before reaching the kill point
    after_kill: State
    after_rerun: State
    rerun_exit: int
    rerun_message: str

    @property
    def survived(self) -> bool:
        """Consistent after the kill, and a rerun of the same command finished the job."""
        kill_ok = not self.after_kill.problems or self.after_kill.problems == ("data/.encryption_key holds neither key",)
        # Right after a kill the key file may lag behind the database (killed between COMMIT and
        # writing it): that is the one mismatch allowed, because the rerun repairs it.
        lagging = self.after_kill.under == "new" and self.after_kill.key_file == "old"
        kill_ok = kill_ok and (self.after_kill.under == self.after_kill.key_file or lagging)
        rerun_ok = (self.rerun_exit == 0 and not self.after_rerun.problems
                    and self.after_rerun.under == "new" and self.after_rerun.key_file == "new")
        return kill_ok and rerun_ok


def kill_and_rerun(scenario: Scenario, label: str, *, kill_at: str | None = None,
                   kill_after: float | None = None, from_point: str | None = None) -> KillResult:
    if kill_at is not None:
        code = run_rotation(scenario, kill_at).returncode
    else:
        assert kill_after is not None
        code = run_and_kill_after(scenario, kill_after, from_point=from_point)
    killed = code == -signal.SIGKILL
    after_kill = inspect(scenario)
    rerun = run_rotation(scenario, quiet=False)
    return KillResult(label, killed, after_kill, inspect(scenario), rerun.returncode, rerun.stderr.strip())
