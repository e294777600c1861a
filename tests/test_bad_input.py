"""Every kind of bad input: a clear message, its own exit code, and nothing changed on disk.

Each case is a row of BAD_INPUTS (the README's table lists the same cases).
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.errors import ExitCode

from .conftest import TrekCopy, table_dump

REPO_ROOT = Path(__file__).resolve().parent.parent


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: mode and content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = (path.stat().st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            out[str(path.relative_to(root))] = (path.stat().st_mode, "dir")
    return out


def key_file(tmp: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp / name
    path.write_text(text)
    path.chmod(mode)
    return path


def corrupt_ciphertext(trek: TrekCopy, how: str) -> None:
    """Damage one secret (users.maps_api_key of one user) the way a disk or a bad script would."""
    with closing(sqlite3.connect(trek.db)) as conn:
        rowid, value = conn.execute(
            "SELECT id, maps_api_key FROM users WHERE maps_api_key LIKE 'enc:v1:%' ORDER BY id LIMIT 1"
        ).fetchone()
        if how == "bad tag":
            body = value[len("enc:v1:"):]
            flipped = "A" if body[20] != "A" else "B"  # inside the tag (bytes 12..27)
            damaged = "enc:v1:" + body[:20] + flipped + body[21:]
        elif how == "truncated":
            damaged = value[:30]
        else:  # not base64
            damaged = "enc:v1:" + "%%%% not base64 at all %%%%"
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id = ?", (damaged, rowid))
        conn.commit()


@dataclass(frozen=True)
class BadInput:
    name: str
    setup: Callable[[TrekCopy, Path], list[str]]  # returns the command line after "keyrotate"
    exit_code: ExitCode
    says: str


def _rotate(trek: TrekCopy, tmp: Path, *extra: str) -> list[str]:
    return ["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(key_file(tmp, "new.key", "N" * 64)),
            "--yes", *extra]


def _not_sqlite(trek: TrekCopy, tmp: Path) -> list[str]:
    (tmp / "notes.db").write_text("just some text, long enough to have a header\n" * 10)
    return ["rotate", "--db", str(tmp / "notes.db"), "--old-key-file", str(trek.data_dir / ".encryption_key"),
            "--new-key-file", str(key_file(tmp, "new.key", "N" * 64)), "--yes"]


def _truncated(trek: TrekCopy, tmp: Path) -> list[str]:
    data = trek.db.read_bytes()
    trek.db.write_bytes(data[: len(data) // 3])
    return _rotate(trek, tmp)


def _corrupt(trek: TrekCopy, tmp: Path) -> list[str]:
    data = bytearray(trek.db.read_bytes())
    page = 4096
    for n in range(40, 60):  # scribble over twenty pages in the middle
        data[n * page + 8 : n * page + 400] = os.urandom(392)
    trek.db.write_bytes(bytes(data))
    return _rotate(trek, tmp)


def _not_trek(trek: TrekCopy, tmp: Path) -> list[str]:
    other = tmp / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('hello')")
        conn.commit()
    return ["rotate", "--db", str(other), "--old-key-file", str(trek.data_dir / ".encryption_key"),
            "--new-key-file", str(key_file(tmp, "new.key", "N" * 64)), "--yes"]


def _readonly_file(trek: TrekCopy, tmp: Path) -> list[str]:
    trek.db.chmod(0o444)
    return _rotate(trek, tmp)


def _readonly_dir(trek: TrekCopy, tmp: Path) -> list[str]:
    args = _rotate(trek, tmp)
    trek.data_dir.chmod(0o555)
    return args


def _tiny_filesystem(trek: TrekCopy, tmp: Path) -> list[str]:
    mount = tmp / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE case covers a full disk")
    return _rotate(trek, tmp, "--backup", str(mount / "travel.db.backup"))


def _same_key(trek: TrekCopy, tmp: Path) -> list[str]:
    same = key_file(tmp, "same.key", trek.key.reveal())
    return ["rotate", "--db", str(trek.db), "--old-key-file", str(same), "--new-key-file", str(same), "--yes"]


def _wrong_old_key(trek: TrekCopy, tmp: Path) -> list[str]:
    # --db: with --data-dir, the key TREK uses there (the right one) is tried before the key given.
    return ["rotate", "--db", str(trek.db), "--old-key-file", str(key_file(tmp, "wrong.key", "W" * 64)),
            "--new-key-file", str(key_file(tmp, "new.key", "N" * 64)), "--yes"]


def _damaged(how: str) -> Callable[[TrekCopy, Path], list[str]]:
    def setup(trek: TrekCopy, tmp: Path) -> list[str]:
        corrupt_ciphertext(trek, how)
        return _rotate(trek, tmp)

    return setup


def _new_key_file(text: str | None, *, directory: bool = False) -> Callable[[TrekCopy, Path], list[str]]:
    def setup(trek: TrekCopy, tmp: Path) -> list[str]:
        path = tmp / "new.key"
        if directory:
            path.mkdir()
        elif text is not None:
            key_file(tmp, "new.key", text)
        return ["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(path), "--yes"]

    return setup


def _data_dir_key_is_a_directory(trek: TrekCopy, tmp: Path) -> list[str]:
    (trek.data_dir / ".encryption_key").unlink()
    (trek.data_dir / ".encryption_key").mkdir()
    return _rotate(trek, tmp)


def _env_key(value: str) -> Callable[[TrekCopy, Path], list[str]]:
    def setup(trek: TrekCopy, tmp: Path) -> list[str]:
        os.environ["KEYROTATE_TEST_NEW_KEY"] = value
        return ["rotate", "--data-dir", str(trek.data_dir), "--new-key-env", "KEYROTATE_TEST_NEW_KEY", "--yes"]

    return setup


NOT_UTF8_CANARY = "AIzaNOT-UTF8-CANARY-locked-full-readonly"  # words other SQLite errors are told apart by


def _not_utf8(trek: TrekCopy, tmp: Path) -> list[str]:
    """A secret holding bytes that are not UTF-8 (TREK never writes them): SQLite's error names the text."""
    with closing(sqlite3.connect(trek.db)) as conn:
        conn.execute("UPDATE users SET maps_api_key = CAST(? AS TEXT) WHERE id = (SELECT min(id) FROM users)",
                     (NOT_UTF8_CANARY.encode() + b"\xff",))
        conn.commit()
    return _rotate(trek, tmp)


BAD_INPUTS = [
    BadInput("database path does not exist", lambda t, tmp: ["rotate", "--db", str(tmp / "nope.db"), "--yes"],
             ExitCode.NOT_FOUND, "does not exist"),
    BadInput("data directory does not exist", lambda t, tmp: ["rotate", "--data-dir", str(tmp / "nope"), "--yes"],
             ExitCode.NOT_FOUND, "does not exist"),
    BadInput("--db is a directory", lambda t, tmp: ["rotate", "--db", str(t.data_dir), "--yes"],
             ExitCode.NOT_FOUND, "is a directory"),
    BadInput("--data-dir is a file", lambda t, tmp: ["rotate", "--data-dir", str(t.db), "--yes"],
             ExitCode.NOT_FOUND, "is not a directory"),
    BadInput("file is not SQLite", _not_sqlite, ExitCode.NOT_A_DATABASE, "not a SQLite database"),
    BadInput("truncated SQLite file", _truncated, ExitCode.NOT_A_DATABASE, "damaged"),
    BadInput("corrupt SQLite file (integrity check fails)", _corrupt, ExitCode.NOT_A_DATABASE, "from a backup first"),
    BadInput("a secret that is not UTF-8 text", _not_utf8, ExitCode.NOT_A_DATABASE,
             "a value in the column maps_api_key is not valid UTF-8 text"),
    BadInput("SQLite database that is not TREK's", _not_trek, ExitCode.NOT_TREK, "not TREK's"),
    BadInput("read-only database file", _readonly_file, ExitCode.CANNOT_WRITE, "is read-only"),
    BadInput("read-only data directory", _readonly_dir, ExitCode.CANNOT_WRITE, "is read-only"),
    BadInput("no room for the backup (64 KiB tmpfs)", _tiny_filesystem, ExitCode.CANNOT_WRITE, "Free some space"),
    BadInput("old key equal to the new key", _same_key, ExitCode.BAD_KEY, "is the same as an old key"),
    BadInput("wrong old key", _wrong_old_key, ExitCode.WRONG_KEY, "opens 0 of"),
    BadInput("bad GCM tag in one secret", _damaged("bad tag"), ExitCode.UNDECRYPTABLE, "users.maps_api_key (id="),
    BadInput("truncated ciphertext in one secret", _damaged("truncated"), ExitCode.UNDECRYPTABLE, "users.maps_api_key (id="),
    BadInput("ciphertext that is not base64", _damaged("not base64"), ExitCode.UNDECRYPTABLE, "users.maps_api_key (id="),
    BadInput("new key file missing", _new_key_file(None), ExitCode.BAD_KEY, "does not exist"),
    BadInput("new key file empty", _new_key_file(""), ExitCode.BAD_KEY, "is empty"),
    BadInput("new key file whitespace only", _new_key_file(" \n\t \n"), ExitCode.BAD_KEY, "is empty"),
    BadInput("new key file wrapped in quotes", _new_key_file('"' + "Q" * 64 + '"\n'), ExitCode.BAD_KEY,
             "is wrapped in quotes"),
    BadInput("new key file holding an env line", _new_key_file("ENCRYPTION_KEY=" + "E" * 64 + "\n"), ExitCode.BAD_KEY,
             "looks like a line of an env file"),
    BadInput("new key file holding an export line", _new_key_file("export ENCRYPTION_KEY=" + "E" * 64),
             ExitCode.BAD_KEY, "looks like a line of an env file"),
    BadInput("new key file larger than 64 KiB", _new_key_file("k" * (64 * 1024 + 1)), ExitCode.BAD_KEY,
             "is larger than 64 KiB"),
    BadInput("new key file is a directory", _new_key_file(None, directory=True), ExitCode.BAD_KEY, "is a directory"),
    BadInput("data/.encryption_key is a directory", _data_dir_key_is_a_directory, ExitCode.BAD_KEY, "Cannot read"),
    BadInput("new key from an empty environment variable", _env_key(""), ExitCode.BAD_KEY, "is empty"),
    BadInput("new key from a whitespace-only variable", _env_key("   "), ExitCode.BAD_KEY, "is empty"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.name for c in BAD_INPUTS])
def test_bad_input_is_refused_with_its_exit_code_and_nothing_changes(case: BadInput, trek4: TrekCopy,
                                                                     tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    try:
        args = case.setup(trek4, work)
        before = snapshot(tmp_path)
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        after = snapshot(tmp_path)
    finally:
        os.environ.pop("KEYROTATE_TEST_NEW_KEY", None)
        trek4.data_dir.chmod(0o755)
        if trek4.db.exists():
            trek4.db.chmod(0o644)
        subprocess.run(["umount", str(work / "tiny")], capture_output=True, check=False)
    assert result.exit_code == case.exit_code, result.output
    assert case.says in result.output
    said = result.output.lower()
    assert "nothing was changed" in said or "nothing was written" in said or case.exit_code in (
        ExitCode.NOT_FOUND, ExitCode.NOT_A_DATABASE, ExitCode.NOT_TREK, ExitCode.BAD_KEY)
    assert "Traceback" not in result.output and NOT_UTF8_CANARY not in result.output
    assert after == before  # not one byte, mode or file changed, none added


def test_a_full_disk_during_the_backup_changes_nothing(trek4: TrekCopy, tmp_path: Path) -> None:
    """No mount needed: a file-size limit makes the backup hit 'disk full' (EFBIG) half way."""
    new = key_file(tmp_path, "new.key", "N" * 64)
    before = snapshot(trek4.data_dir)
    dump = table_dump(trek4.db)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", "keyrotate", "rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new),
         "--yes"], preexec_fn=limit, env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode == ExitCode.CANNOT_WRITE, done.stderr
    assert "The backup to" in done.stderr and "nothing was changed" in done.stderr
    assert snapshot(trek4.data_dir) == before
    assert table_dump(trek4.db) == dump


def test_a_world_readable_key_file_is_warned_about(trek4: TrekCopy, tmp_path: Path) -> None:
    new = key_file(tmp_path, "new.key", "N" * 64, mode=0o644)
    result = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new),
                                       "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"WARNING: Key file {new} can be read by other users (mode 0644); consider: chmod o-rwx {new}" in result.output
    group = key_file(tmp_path, "group.key", "G" * 64, mode=0o640)  # TREK may read its key through its group
    quiet = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(group),
                                      "--dry-run"], catch_exceptions=False)
    assert quiet.exit_code == 0 and f"Key file {group}" not in quiet.output


def test_a_world_readable_encryption_key_in_the_data_dir_is_warned_about(trek4: TrekCopy) -> None:
    key = trek4.data_dir / ".encryption_key"
    key.chmod(0o644)
    result = CliRunner().invoke(main, ["verify", "--data-dir", str(trek4.data_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"WARNING: Key file {key} can be read by other users (mode 0644)" in result.output
    key.chmod(0o600)
    quiet = CliRunner().invoke(main, ["verify", "--data-dir", str(trek4.data_dir)], catch_exceptions=False)
    assert "WARNING" not in quiet.output


def test_damaged_ciphertext_in_a_json_field_is_named_by_path(trek4: TrekCopy, tmp_path: Path) -> None:
    with closing(sqlite3.connect(trek4.db)) as conn:
        plugin_id, config = conn.execute("SELECT id, config FROM plugins WHERE config LIKE '%enc:v1:%' LIMIT 1").fetchone()
        start = config.index("enc:v1:")
        conn.execute("UPDATE plugins SET config = ? WHERE id = ?", (config[: start + 20] + config[start + 28 :], plugin_id))
        conn.commit()
    before = snapshot(trek4.data_dir)
    result = CliRunner().invoke(main, _rotate(trek4, tmp_path), catch_exceptions=False)
    assert result.exit_code == ExitCode.UNDECRYPTABLE, result.output
    assert f"plugins.config secret fields (id={plugin_id}) at $." in result.output
    assert snapshot(trek4.data_dir) == before


def test_tokens_that_open_under_no_key_are_counted_for_verify(trek4: TrekCopy) -> None:
    corrupt_ciphertext(trek4, "bad tag")
    result = CliRunner().invoke(main, ["verify", "--data-dir", str(trek4.data_dir)], catch_exceptions=False)
    assert result.exit_code == ExitCode.VERIFY_FAILED
    assert "NO KEY: users.maps_api_key (id=" in result.output


@pytest.mark.parametrize("command", ["verify", "rotate"])
def test_a_key_file_this_user_cannot_read_exits_6(trek4: TrekCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  command: str) -> None:
    """click refused it first, as a usage error (exit 2), before keyrotate could say what is wrong. Simulated from
    the test side (the suite may run as root, who reads any file): access() and the read both say EACCES."""
    locked = key_file(tmp_path, "locked.key", "L" * 64, mode=0o600)
    real_access, real_read = os.access, Path.read_bytes

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        return False if Path(str(path)) == locked else real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    def read_bytes(self: Path) -> bytes:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    args = ["verify", "--db", str(trek4.db), "--key-file", str(locked)] if command == "verify" else \
        ["rotate", "--db", str(trek4.db), "--old-key-file", str(locked), "--new-key-file", str(locked)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == ExitCode.BAD_KEY, result.output
    assert f"Cannot read key file {locked}: Permission denied." in result.output


def test_rotating_back_to_a_key_this_database_was_rotated_away_from_is_warned_about(trek4: TrekCopy,
                                                                                     tmp_path: Path) -> None:
    """The retired key (perhaps the leaked one) sits beside the backup keyrotate made; going back to it is allowed,
    but never silently."""
    old = key_file(tmp_path, "old.key", (trek4.data_dir / ".encryption_key").read_text().strip(), mode=0o600)
    new = key_file(tmp_path, "new.key", "N" * 64, mode=0o600)
    first = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new), "--yes"],
                               catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "rotated away from" not in first.output
    back = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(old),
                                     "--dry-run"], catch_exceptions=False)
    assert back.exit_code == 0, back.output
    assert "WARNING: The new key is a key this database was rotated away from (the old key saved in " in back.output
    assert "keyrotate generate-key --out FILE" in back.output


@pytest.mark.parametrize("command", ["verify", "audit", "exposure"])
def test_a_secret_that_is_not_utf8_is_named_by_column_never_shown(command: str, trek4: TrekCopy, tmp_path: Path) -> None:
    """The read-only commands stop at it the same way: exit 4, the column named, the text (a secret) never printed."""
    _not_utf8(trek4, tmp_path)
    result = CliRunner().invoke(main, [command, "--data-dir", str(trek4.data_dir)], catch_exceptions=False)
    assert result.exit_code == ExitCode.NOT_A_DATABASE, result.output
    assert "maps_api_key is not valid UTF-8" in result.output and NOT_UTF8_CANARY not in result.output
