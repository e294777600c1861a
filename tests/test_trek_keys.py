"""Keys exactly as TREK reads them: JavaScript's trim(), new keys TREK reads back unchanged, owners kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key, js_trim, key_from_file

from .conftest import TrekCopy
from .test_lifecycle import REPO_ROOT, fingerprint, run_keyrotate

# ECMA-262 WhiteSpace + LineTerminator: what String.prototype.trim() strips (written out, not imported).
JS_TRIM_TABLE = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0xA0, 0x1680, *range(0x2000, 0x200B),
                 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF]
# Python's str.strip() strips these, JavaScript keeps them (plus a few look-alikes JS also keeps).
JS_KEEPS = [0x1C, 0x1D, 0x1E, 0x1F, 0x85, 0x180E, 0x200B, 0x2060, 0x00]
NEW = "a-perfectly-fine-new-key-0123456789abcdef"


@pytest.mark.parametrize("code", JS_TRIM_TABLE, ids=hex)
def test_js_trim_strips_each_js_whitespace_on_both_sides(code: int) -> None:
    c = chr(code)
    assert js_trim(f"{c}{c}key{c}inside{c}{c}") == f"key{c}inside"


@pytest.mark.parametrize("code", JS_KEEPS, ids=hex)
def test_js_trim_keeps_what_javascript_keeps(code: int) -> None:
    c = chr(code)
    assert js_trim(f"{c}key{c}") == f"{c}key{c}"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_js_trim_matches_node_on_every_bmp_character() -> None:
    script = ("const out=[];for(let c=0;c<0x10000;c++){if(c>=0xD800&&c<0xE000)continue;"
              "const s=String.fromCharCode(c);if(('x'+s).trim()==='x'&&(s+'x').trim()==='x')out.push(c);}"
              "console.log(JSON.stringify(out));")
    node = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True, timeout=60)
    stripped_by_node = set(json.loads(node.stdout))
    stripped_here = {c for c in range(0x10000) if not 0xD800 <= c < 0xE000 and js_trim(f"x{chr(c)}") == "x"}
    assert stripped_here == stripped_by_node == set(JS_TRIM_TABLE)


def test_key_files_are_read_with_js_trim(tmp_path: Path) -> None:
    path = tmp_path / "old.key"
    path.write_text("\ufeff KEY-with-a-kept-\x1c\x85\n", encoding="utf-8")
    key, _ = key_from_file(path, "old")
    assert key.same_secret_as(Key("KEY-with-a-kept-\x1c\x85", "expected"))


def test_data_dir_key_file_with_a_bom_is_read_as_trek_reads_it(trek3: TrekCopy) -> None:
    key_file = trek3.data_dir / ".encryption_key"
    key_file.write_text("\ufeff" + key_file.read_text().strip() + "\r\n", encoding="utf-8")

    result = run_keyrotate(["verify", "--data-dir", str(trek3.data_dir)])

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("value", "problem"),
    [(NEW + "\n", "ends with a line feed"), (" " + NEW, "starts with a space"),
     (NEW + "\u3000", "ends with whitespace (U+3000)"), ("\ufeff" + NEW, "starts with a byte-order mark"),
     (NEW[:10] + "\n" + NEW[10:], "line break")],
    ids=["trailing-newline", "leading-space", "ideographic-space", "bom", "inner-newline"],
)
def test_a_new_key_trek_would_not_read_back_is_refused_before_anything_is_written(
    trek3: TrekCopy, value: str, problem: str
) -> None:
    before = fingerprint(trek3.data_dir)

    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-env", "NEWKEY"], NEWKEY=value)

    assert result.returncode == 6, result.stderr
    assert problem in result.stderr
    assert NEW[:10] not in result.stderr + result.stdout
    assert fingerprint(trek3.data_dir) == before


@pytest.mark.parametrize(("inside", "problem"), [("\n", "line break"), ("\r", "line break"), ("\x00", "NUL")],
                         ids=["lf", "cr", "nul"])
def test_a_new_key_file_with_a_line_break_or_nul_inside_is_refused(
    trek3: TrekCopy, tmp_path: Path, inside: str, problem: str
) -> None:
    new = tmp_path / "new.key"
    new.write_text(NEW[:10] + inside + NEW[10:] + "\n")
    before = fingerprint(trek3.data_dir)

    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new)])

    assert result.returncode == 6, result.stderr
    assert problem in result.stderr
    assert NEW[:10] not in result.stderr + result.stdout
    assert fingerprint(trek3.data_dir) == before


def test_a_new_key_file_ending_in_a_newline_is_the_trimmed_key(trek3: TrekCopy, tmp_path: Path) -> None:
    new = tmp_path / "new.key"
    new.write_text(NEW + "\n")  # echo KEY > new.key

    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new)])

    assert result.returncode == 0, result.stderr
    assert (trek3.data_dir / ".encryption_key").read_text() == NEW
    assert verify_database(trek3.db, [Key(NEW, "new")]).ok


def test_a_new_key_typed_at_the_prompt_is_checked_too(trek3: TrekCopy) -> None:
    before = fingerprint(trek3.data_dir)
    typed = f" {NEW}\n"
    result = subprocess.run(
        [sys.executable, "-m", "keyrotate", "rotate", "--data-dir", str(trek3.data_dir), "--yes"],
        input=typed * 2, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=120, check=False,
    )
    assert result.returncode == 6, result.stderr
    assert "starts with a space" in result.stderr
    assert fingerprint(trek3.data_dir) == before


@pytest.mark.parametrize(("value", "weakness"), [("short-key-123", "shorter than 32"),
                                                 ("ab" * 20, "fewer than 8 different")])
def test_a_weak_new_key_gets_a_warning_naming_generate_key(trek3: TrekCopy, value: str, weakness: str) -> None:
    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-env", "NEWKEY"], NEWKEY=value)

    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if weakness in line)
    assert "keyrotate generate-key" in warning


def test_a_strong_new_key_gets_no_warning(trek3: TrekCopy, new_key_file: Path) -> None:
    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)])
    assert result.returncode == 0, result.stderr
    assert "generate-key" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
@pytest.mark.parametrize("key_file_exists", [True, False], ids=["key-file", "jwt-fallback"])
def test_run_as_root_the_files_keep_treks_owner(trek3: TrekCopy, new_key_file: Path, key_file_exists: bool) -> None:
    enc = trek3.data_dir / ".encryption_key"
    if not key_file_exists:  # an install on the .jwt_secret fallback: keyrotate creates .encryption_key
        (trek3.data_dir / ".jwt_secret").write_text(enc.read_text())
        enc.unlink()
    for path in [trek3.data_dir, *trek3.data_dir.iterdir()]:
        os.chown(path, 1234, 1235)

    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)])

    assert result.returncode == 0, result.stderr
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in trek3.data_dir.iterdir()}
    assert owners[".encryption_key"] == (1234, 1235)
    for name in ("travel.db", "travel.db-wal", "travel.db-shm"):
        assert owners.get(name, (1234, 1235)) == (1234, 1235), name



@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_run_as_root_a_killed_run_leaves_wal_and_shm_owned_by_trek(trek3: TrekCopy, new_key_file: Path) -> None:
    for path in [trek3.data_dir, *trek3.data_dir.iterdir()]:
        os.chown(path, 1234, 1235)
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)]

    killed = run_keyrotate(args, kill_at="after-commit")

    assert killed.returncode == -9, killed.stderr
    sidecars = [trek3.data_dir / f"travel.db-{s}" for s in ("wal", "shm")]
    assert all(p.exists() for p in sidecars)  # the kill left them: TREK must be able to open them
    assert all((p.stat().st_uid, p.stat().st_gid) == (1234, 1235) for p in sidecars)
    finished = run_keyrotate(args)
    assert finished.returncode == 0, finished.stderr
    assert (trek3.data_dir / ".encryption_key").stat().st_uid == 1234


def test_a_key_piped_in_without_a_terminal_gives_no_getpass_warning(trek3: TrekCopy) -> None:
    """Python's getpass warned "Can not control echo on the terminal" (with its own source line) and "Password
    input may be echoed" when a key came from a pipe with no terminal at all (cron, a CI job, setsid)."""
    done = subprocess.run([sys.executable, "-m", "keyrotate", "verify", "--db", str(trek3.db)],
                          input=trek3.key.reveal() + "\n", capture_output=True, text=True, check=False,
                          start_new_session=True,  # no controlling terminal: getpass cannot open /dev/tty
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert done.returncode == 0, done.stderr
    assert "GetPassWarning" not in done.stderr and "may be echoed" not in done.stderr
    assert trek3.key.reveal() not in done.stderr + done.stdout


def test_a_key_piped_in_from_a_terminal_is_read_from_the_pipe(trek3: TrekCopy) -> None:
    """`echo KEY | keyrotate verify` typed at a terminal: getpass read the terminal, not the pipe, and the command
    waited for typing (the test's terminal never types: it used to run into the timeout)."""
    import fcntl
    import pty
    import termios

    controller, terminal = pty.openpty()

    def take_the_terminal() -> None:
        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)  # /dev/tty is now this pseudo-terminal

    try:
        done = subprocess.run([sys.executable, "-m", "keyrotate", "verify", "--db", str(trek3.db)],
                              input=(trek3.key.reveal() + "\n").encode(), capture_output=True,
                              preexec_fn=take_the_terminal, timeout=60, check=False,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 0, done.stderr
    assert b"OK: the first key" in done.stderr and trek3.key.reveal().encode() not in done.stderr + done.stdout
