"""No key and no plaintext ever leaves keyrotate, except into the database, its backup and key files.

Every command and failure path runs as a real process, with recognisable keys
and plaintexts (canaries). Their stdout, stderr (tracebacks included), the JSON
reports and every file they create are searched for each canary; every file
keyrotate creates must be mode 0600.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key, create_key_file
from keyrotate.trek.sample import add_plugin_users, build_sample_database

from .ziphelpers import build_backup_zip

REPO_ROOT = Path(__file__).resolve().parent.parent
OLD = "CANARY-OLD-KEY-5be1c0d2a8f34e6b9f00"
NEW = "CANARY-NEW-KEY-c47d9e1f0b2a83657e11"
WRONG = "CANARY-WRONG-KEY-0f9e8d7c6b5a4"
PLANTED = {
    ("users", "maps_api_key", 1): "CANARY-PLAIN-maps-3c9f1e",
    ("users", "mfa_secret", 2): "CANARYPLAINMFASEEDJBSWY3DPEHPK3PX",
    ("settings", "value", "ntfy_token"): "CANARY-PLAIN-ntfy-a81b4d",
    ("app_settings", "value", "smtp_pass"): "CANARY-PLAIN-smtp-77e0c2",
    ("trips", "description", 1): "CANARY-PLAIN-stray-9d2e44",
}
TREK_FILES = ("travel.db", "travel.db-wal", "travel.db-shm", "travel.db-journal")
WINDOW = 12  # a leak of any 12 consecutive characters of a canary counts


def leaks(canaries: list[str], text: str) -> list[str]:
    """The canaries of which any piece of WINDOW characters appears in ``text``."""
    return [c for c in canaries if any(c[i : i + WINDOW] in text for i in range(max(1, len(c) - WINDOW + 1)))]


@dataclass
class Canaries:
    root: Path
    data_dir: Path
    plaintexts: list[str]

    @property
    def keys(self) -> list[str]:
        return [OLD, NEW, WRONG]


def plant(db: Path, old: Key) -> None:
    api, mfa = Cipher(old, Scheme.API), Cipher(old, Scheme.MFA)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id = 1", (api.seal(PLANTED["users", "maps_api_key", 1].encode()),))
        conn.execute("UPDATE users SET mfa_secret = ? WHERE id = 2", (mfa.seal(PLANTED["users", "mfa_secret", 2].encode()),))
        conn.execute("INSERT OR REPLACE INTO settings (user_id, key, value) VALUES (3, 'ntfy_token', ?)",
                     (api.seal(PLANTED["settings", "value", "ntfy_token"].encode()),))
        conn.execute("UPDATE app_settings SET value = ? WHERE key = 'smtp_pass'",
                     (api.seal(PLANTED["app_settings", "value", "smtp_pass"].encode()),))
        conn.execute("UPDATE trips SET description = ? WHERE id = 1",
                     (f"see {api.seal(PLANTED['trips', 'description', 1].encode())} for the api",))
        conn.commit()


@pytest.fixture
def canaries(tmp_path: Path) -> Canaries:
    data = tmp_path / "data"
    data.mkdir()
    create_key_file(data / ".encryption_key", OLD)
    old = Key(OLD, "canary old key")
    sample = build_sample_database(data / "travel.db", old, users=20, seed=11)
    extra = add_plugin_users(data / "travel.db", old, range(1, 6), seed=11)
    plant(data / "travel.db", old)
    create_key_file(tmp_path / "new.key", NEW)
    create_key_file(tmp_path / "wrong.key", WRONG)
    plaintexts = [s.plaintext for s in [*sample.secrets, *extra] if len(s.plaintext.strip()) >= 8]
    return Canaries(tmp_path, data, [*plaintexts, *PLANTED.values()])


def keyrotate(canaries: Canaries, *args: str, stdin: str = "", env: dict[str, str] | None = None,
              ) -> tuple[int, str, str]:
    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    **(env or {}))
    # Kill points are armed only by the test launcher (tests/kill_at.py), never by the package itself.
    module = "tests.kill_at" if env and "KEYROTATE_TEST_KILL_AT" in env else "keyrotate"
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=canaries.root, input=stdin, env=full_env,
                          capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout, done.stderr


def files(root: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def test_no_canary_escapes_any_command(canaries: Canaries) -> None:
    data, root = canaries.data_dir, canaries.root
    db = str(data / "travel.db")
    (data / "backups").mkdir()
    trek_zip = build_backup_zip(data / "travel.db", data / "backups" / "backup-2026-03-14T02-30-00.zip")
    trek_zip.chmod(0o600)
    runs: list[tuple[str, list[str], str, dict[str, str] | None, set[int]]] = [
        ("backups", ["backups", "--data-dir", str(data), "--key-env", "CANARY_OLD", "--format", "json"], "",
         {"CANARY_OLD": OLD}, {0}),
        ("exposure", ["exposure", "--data-dir", str(data), "--format", "markdown"], "", None, {0}),
        ("exposure --format csv, wrong key", ["exposure", "--db", db, "--key-file", str(root / "wrong.key"),
                                               "--format", "csv"], "", None, {0}),
        ("audit", ["audit", "--data-dir", str(data), "--format", "json"], "", None, {0}),
        ("rekey-backup --dry-run", ["rekey-backup", "--data-dir", str(data), "--new-key-file", str(root / "new.key"),
                                    "--dry-run", str(trek_zip)], "", None, {0}),
        ("generate-key --out", ["generate-key", "--out", str(root / "generated.key")], "", None, {0}),
        ("verify --data-dir", ["verify", "--data-dir", str(data)], "", None, {0}),
        ("verify --json, wrong key first", ["verify", "--db", db, "--key-file", str(root / "wrong.key"),
                                            "--key-env", "CANARY_OLD", "--json"], "", {"CANARY_OLD": OLD}, {9}),
        ("rotate, wrong old key", ["rotate", "--db", db, "--old-key-file", str(root / "wrong.key"),
                                   "--new-key-file", str(root / "new.key"), "--json"], "", None, {7}),
        ("rotate, old == new", ["rotate", "--db", db, "--old-key-env", "CANARY_NEW", "--new-key-env", "CANARY_NEW"],
         "", {"CANARY_NEW": NEW}, {6}),
        ("rotate --dry-run --json", ["rotate", "--data-dir", str(data), "--new-key-file", str(root / "new.key"),
                                     "--dry-run", "--json"], "", None, {0}),
        ("rotate, keys typed at a (piped) prompt, then answering no",
         ["rotate", "--db", db], f"{OLD}\n{NEW}\n{NEW}\nn\n", None, {12}),
        ("rotate killed before COMMIT", ["rotate", "--data-dir", str(data), "--new-key-file", str(root / "new.key")],
         "", {"KEYROTATE_TEST_KILL_AT": "before-commit"}, {-9}),
        ("rotate --json --incident --rekey-backups",
         ["rotate", "--data-dir", str(data), "--new-key-file", str(root / "new.key"), "--json", "--incident",
          "--rekey-backups", "--backup", str(root / "travel.db.backup")], "", None, {0}),
        ("rotate again", ["rotate", "--data-dir", str(data), "--new-key-file", str(root / "new.key"), "--json"],
         "", None, {0}),
        ("verify after", ["verify", "--data-dir", str(data), "--key-file", str(root / "wrong.key"), "--json"], "",
         None, {9}),
        ("rotate --generate-new-key", ["rotate", "--data-dir", str(data), "--generate-new-key", "--new-key-out",
                                       str(root / "generated-new.key"), "--no-backup"], "", None, {0}),
    ]
    outputs: list[tuple[str, str]] = []
    created: dict[Path, str] = {}
    # Read when seen: a later run may remove the file (a marker, the backup of a run killed before COMMIT).
    contents: dict[Path, bytes] = {}
    modes: dict[Path, int] = {}
    for label, args, stdin, env, expected in runs:
        before = files(root)
        code, out, err = keyrotate(canaries, *args, stdin=stdin, env=env)
        assert code in expected, f"{label}: exit {code}\n{err}"
        if "--json" in args and code in (0, 9):
            json.loads(out)  # a real report, searched below
        outputs.append((label, out + err))
        for path, mtime in files(root).items():
            if path not in before or before[path] != mtime:
                created.setdefault(path, label)
                contents[path] = path.read_bytes()
                modes[path] = path.stat().st_mode & 0o777

    # Failure paths that end in a traceback: a trigger that rejects the rewrite (an internal error, exit 1).
    with closing(sqlite3.connect(data / "travel.db")) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON users BEGIN SELECT RAISE(ABORT, 'read only'); END")
        conn.commit()
    code, out, err = keyrotate(canaries, "rotate", "--data-dir", str(data), "--new-key-file", str(root / "wrong.key"),
                               "--no-backup")
    assert code == 1 and "Traceback" in err
    outputs.append(("traceback", out + err))

    generated = (root / "generated-new.key").read_text().strip()
    secrets = [*canaries.keys, generated, *canaries.plaintexts]
    for label, text in outputs:
        assert not leaks(secrets, text), f"{label} printed {len(leaks(secrets, text))} canaries"
    database_files = {data / name for name in TREK_FILES}
    for path, label in created.items():
        if path in database_files or (path.name.startswith("travel.db") and path.suffix != ".key") \
                or path.suffix == ".zip":
            continue  # the database, its backup and TREK's backup ZIPs hold ciphertexts by design
        content = contents[path].decode("utf-8", errors="replace")
        # Key files by design, the old key saved beside a backup (travel.db...key) included.
        holds_keys = path.name == ".encryption_key" or path.suffix == ".key"
        leaked = leaks(canaries.plaintexts if holds_keys else secrets, content)
        assert not leaked, f"{path.name} (written by {label}) holds {len(leaked)} canaries"
    for path, label in created.items():
        if path in database_files:
            continue
        assert modes[path] == 0o600, f"{path.name} (written by {label}) is {modes[path]:o}"
    # The canaries are real: the backup still opens with the old key and gives them back.
    with closing(sqlite3.connect(root / "travel.db.backup")) as conn:
        stored = conn.execute("SELECT maps_api_key FROM users WHERE id = 1").fetchone()[0]
    assert Cipher(Key(OLD, "old"), Scheme.API).open(stored) == PLANTED["users", "maps_api_key", 1].encode()
    assert leaks([PLANTED["users", "maps_api_key", 1]], f"x{PLANTED['users', 'maps_api_key', 1][3:15]}x")


def test_demo_leaks_no_key_and_no_plaintext(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "keyrotate", "demo", "--keep", str(keep)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    # The demo's plaintexts depend only on its seed, so they can be rebuilt and searched for.
    probe = Key("any key", "probe")
    sample = build_sample_database(tmp_path / "probe.db", probe, users=12, seed=7)
    extra = add_plugin_users(tmp_path / "probe.db", probe, range(1, 5), seed=7)
    plaintexts = [s.plaintext for s in [*sample.secrets, *extra] if len(s.plaintext.strip()) >= 8]
    keys = [(keep / "data" / ".encryption_key").read_text().strip(), (keep / "new.key").read_text().strip()]
    text = done.stdout + done.stderr
    assert not leaks([*keys, *plaintexts], text)
    for path in keep.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == expected, f"{path} is {path.stat().st_mode & 0o777:o}"
