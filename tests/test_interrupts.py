"""Interrupts tell the truth (issue 8 section 2): real SIGINT and SIGTERM sent to a real ``keyrotate`` process,
paused at each step by tests/pause_at.py."""

from __future__ import annotations

import json
import os
import pty
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyrotate import interrupts
from keyrotate.cli.app import main
from keyrotate.errors import CannotWriteError
from keyrotate.rotation.reading import RangeWriter
from keyrotate.rotation.targets import LocationTarget
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.catalogue import CATALOGUE
from keyrotate.trek.keys import Key

from .crashkit import NEW_TEXT, OLD_TEXT, Scenario, environment, inspect, make_scenario
from .ziphelpers import build_backup_zip, snapshot

SIGNALS = [signal.SIGINT, signal.SIGTERM]
IDS = ["SIGINT", "SIGTERM"]


def rotate_args(scenario: Scenario, *extra: str) -> list[str]:
    return ["rotate", "--data-dir", str(scenario.data_dir), "--new-key-file", str(scenario.new_key_path),
            "--workers", "0", *extra]


def interrupted(tmp_path: Path, args: list[str], point: str, signum: int, *, again: bool = False,
                **env: str) -> subprocess.CompletedProcess[str]:
    """Run keyrotate paused at ``point``, send ``signum`` there (twice with ``again``), let it go on."""
    marker, go = tmp_path / "paused", tmp_path / "go"
    marker.unlink(missing_ok=True)
    go.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", point, str(marker), str(go), *args],
                               env={**environment(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, f"never reached {point}: {process.communicate()}"
    process.send_signal(signum)
    if again:
        time.sleep(0.2)
        process.send_signal(signum)
    time.sleep(0.2)  # the signal is handled (raised, or held) before the pause ends
    go.touch()
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def rerun(message: str) -> subprocess.CompletedProcess[str]:
    """Runs exactly the command the interrupted run printed."""
    line = message.split("To finish, run the same command again:\n", 1)[1].splitlines()[0]
    words = shlex.split(line)
    assert words[0] == "keyrotate"
    return subprocess.run([sys.executable, "-m", "keyrotate", *words[1:]], env=environment(), capture_output=True,
                          text=True, timeout=120, check=False)


# Each step after the COMMIT: the interrupt waits until the key file is written, then says so.
AFTER_COMMIT = ["after-commit", "after-checkpoint", "after-verify", "key-file-temp"]
CASES = [(point, signum) for point in AFTER_COMMIT for signum in SIGNALS] + [("after-verify", signal.SIGHUP)]


@pytest.mark.parametrize(("point", "signum"), CASES, ids=[f"{p}-{signal.Signals(n).name}" for p, n in CASES])
def test_interrupt_after_commit_finishes_the_key_file_and_says_so(tmp_path: Path, point: str, signum: int) -> None:
    scenario = make_scenario(tmp_path)
    result = interrupted(tmp_path, rotate_args(scenario), point, signum, again=signum == signal.SIGINT)
    assert result.returncode == 13, result.stderr
    assert "rolled back" not in result.stderr and "nothing was written" not in result.stderr
    assert f"Interrupted ({signal.Signals(signum).name}) after the commit" in result.stderr
    assert f"{scenario.key_file} holds the new key" in result.stderr
    assert inspect(scenario).problems == () and inspect(scenario).under == "new"
    assert inspect(scenario).key_file == "new"
    if signum == signal.SIGINT:  # the second Ctrl-C was told what is being finished
        assert "SIGINT received: finishing first (the rotation is committed" in result.stderr
    finished = rerun(result.stderr)
    assert finished.returncode == 0, finished.stderr
    assert "already holds the new key and every secret opens under it" in finished.stderr


@pytest.mark.parametrize("signum", [*SIGNALS, signal.SIGHUP], ids=[*IDS, "SIGHUP"])
def test_interrupt_before_commit_rolls_back_and_says_so(tmp_path: Path, signum: int) -> None:
    scenario = make_scenario(tmp_path)
    result = interrupted(tmp_path, rotate_args(scenario), "backup-done", signum)
    assert result.returncode == 12, result.stderr
    assert f"Interrupted ({signal.Signals(signum).name}); the transaction was rolled back and nothing was " \
           "written." in result.stderr
    assert inspect(scenario).under == "old" and inspect(scenario).key_file == "old"
    assert sorted(p.name for p in scenario.data_dir.iterdir()) == [".encryption_key", "travel.db"]


def test_interrupt_right_after_key_generation_says_the_key_was_not_used(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    out = tmp_path / "generated.key"
    args = ["rotate", "--data-dir", str(scenario.data_dir), "--generate-new-key", "--new-key-out", str(out)]
    result = interrupted(tmp_path, args, "after-new-key", signal.SIGTERM)
    assert result.returncode == 12, result.stderr
    assert "Interrupted (SIGTERM); nothing was written." in result.stderr
    assert f"The new key in {out} was not used" in result.stderr
    assert inspect(scenario).under == "old"


def _with_backups(scenario: Scenario, tmp_path: Path, count: int) -> list[Path]:
    folder = scenario.data_dir / "backups"
    folder.mkdir()
    copy = snapshot(scenario.db, tmp_path / "snapshot.db")
    return [build_backup_zip(copy, folder / f"backup-2026-01-0{n}.zip") for n in range(1, count + 1)]


@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_interrupt_during_rekey_backups_leaves_each_zip_whole_and_the_rerun_finishes(
    tmp_path: Path, signum: int
) -> None:
    scenario = make_scenario(tmp_path)
    zips = _with_backups(scenario, tmp_path, 3)
    temp = tmp_path / "tmp"
    temp.mkdir()
    args = rotate_args(scenario, "--rekey-backups")
    result = interrupted(tmp_path, args, "zip-extracted:2", signum, TMPDIR=str(temp))
    assert result.returncode == 13, result.stderr
    assert f"Backup ZIP 1 of 3: {zips[0]}" in result.stderr and f"Backup ZIP 2 of 3: {zips[1]}" in result.stderr
    assert f"Not done: 2 backup ZIP(s) still under the old key, each whole: {zips[1]}, {zips[2]}." in result.stderr
    assert list(temp.iterdir()) == []  # the extracted travel.db went with its temporary directory
    assert "Step: Docker Compose:" in result.stderr  # what to do for TREK is said even so
    assert inspect(scenario).under == "new" and inspect(scenario).key_file == "new"
    opens = _zip_keys(scenario, zips)
    assert opens == ["new", "old", "old"]
    assert not [p for p in (scenario.data_dir / "backups").iterdir() if p.name.startswith(".")]
    finished = rerun(result.stderr)
    assert finished.returncode == 0, finished.stderr
    assert _zip_keys(scenario, zips) == ["new", "new", "new"]


def _zip_keys(scenario: Scenario, zips: list[Path]) -> list[str]:
    listing = subprocess.run([sys.executable, "-m", "keyrotate", "backups", "--data-dir", str(scenario.data_dir),
                              "--key-file", str(scenario.new_key_path), "--format", "json"],
                             env=environment(), capture_output=True, text=True, check=True)
    verdicts = {b["path"]: b["keys"][0]["opens"] for b in json.loads(listing.stdout)["backups"]}
    return ["new" if verdicts[str(z)] == "all" else "old" if verdicts[str(z)] == "none" else "?" for z in zips]


def test_rotate_with_rekey_backups_exits_8_while_a_zip_is_left(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    folder = scenario.data_dir / "backups"
    folder.mkdir()
    (folder / "backup-2026-01-01.zip").write_bytes(b"not a zip")
    result = subprocess.run([sys.executable, "-m", "keyrotate", *rotate_args(scenario, "--rekey-backups")],
                            env=environment(), capture_output=True, text=True, check=False)
    assert result.returncode == 8, result.stderr
    assert inspect(scenario).under == "new"


def test_end_of_input_at_the_confirmation_cancels_with_12(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    old, new = scenario.old_key.reveal(), scenario.new_key.reveal()
    result = CliRunner().invoke(main, ["rotate", "--db", str(scenario.db)], input=f"{old}\n{new}\n{new}\n",
                                catch_exceptions=False)
    assert result.exit_code == 12, result.output
    assert "Aborted!" not in result.output and "Cancelled; nothing was written." in result.output
    assert inspect(scenario).under == "old"


@pytest.mark.parametrize("signum", SIGNALS, ids=IDS)
def test_interrupt_during_imports_prints_no_traceback(tmp_path: Path, signum: int) -> None:
    scenario = make_scenario(tmp_path)
    result = interrupted(tmp_path, rotate_args(scenario), "import", signum)
    assert result.returncode == 12, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == "Interrupted before anything was done; nothing was written.\n"
    assert result.stdout == ""


def test_interrupted_generated_key_run_is_finished_by_the_printed_command(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    out = tmp_path / "generated.key"
    args = ["rotate", "--data-dir", str(scenario.data_dir), "--generate-new-key", "--new-key-out", str(out),
            "--workers", "0"]
    result = interrupted(tmp_path, args, "after-verify", signal.SIGTERM)
    assert result.returncode == 13, result.stderr
    assert f"--new-key-file {out}" in result.stderr and "--generate-new-key" not in result.stderr.split(
        "To finish")[1]
    assert scenario.key_file.read_text() == out.read_text().strip()
    finished = rerun(result.stderr)
    assert finished.returncode == 0, finished.stderr


def test_interrupted_rekey_backup_command_names_what_it_rewrote(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    zips = _with_backups(scenario, tmp_path, 3)
    args = ["rekey-backup", *map(str, zips), "--old-key-file", str(scenario.data_dir / ".encryption_key"),
            "--new-key-file", str(scenario.new_key_path)]
    result = interrupted(tmp_path, args, "zip:3", signal.SIGTERM)
    assert result.returncode == 13, result.stderr
    assert f"after 2 ZIP(s) were re-encrypted: {zips[0]}, {zips[1]}." in result.stderr
    assert _zip_keys(scenario, zips) == ["new", "new", "old"]
    again = subprocess.run([sys.executable, "-m", "keyrotate", *args], env=environment(), capture_output=True,
                           text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert _zip_keys(scenario, zips) == ["new", "new", "new"]


def _read_until(fd: int, wanted: bytes, seen: bytearray) -> None:
    deadline = time.monotonic() + 30
    while wanted not in seen and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        seen += chunk


needs_a_terminal = pytest.mark.skipif(not hasattr(os, "fork") or not Path("/dev/ptmx").exists(),
                                      reason="needs a pseudo-terminal")
KEY_PROMPTS = (b"Old ENCRYPTION_KEY", b"New ENCRYPTION_KEY", b"Repeat for confirmation")


def on_a_terminal(args: list[str], exchanges: Sequence[tuple[bytes, bytes]]) -> tuple[int, str]:
    """Run ``keyrotate ARGS`` on a real terminal; at each prompt, type its bytes. The exit code and all it showed."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: keyrotate on a real terminal, keys typed at its hidden prompts
        os.environ.update(environment())
        os.execv(sys.executable, [sys.executable, "-m", "keyrotate", *args])
    seen = bytearray()
    for prompt, typed in exchanges:
        _read_until(terminal, prompt, seen)
        time.sleep(0.1)
        os.write(terminal, typed)
    _read_until(terminal, b"\x00never", seen)
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


@needs_a_terminal
def test_ctrl_c_at_the_confirmation_on_a_terminal_cancels_with_12(tmp_path: Path) -> None:
    scenario = make_scenario(tmp_path)
    keys = (OLD_TEXT, NEW_TEXT, NEW_TEXT)
    # --quiet: no progress bar on the terminal, only the prompts; Ctrl-C is turned into SIGINT by the terminal
    code, output = on_a_terminal(["rotate", "--db", str(scenario.db), "--quiet"],
                                 [*((p, k.encode() + b"\r") for p, k in zip(KEY_PROMPTS, keys, strict=True)),
                                  (b"rotate now?", b"\x03")])
    assert code == 12, output
    assert "Aborted!" not in output and "Cancelled; nothing was written." in output
    assert inspect(scenario).under == "old"


@needs_a_terminal
@pytest.mark.parametrize(("answers", "stop"), [
    ((), b"\x03"),  # Ctrl-C at the old key
    ((), b"\x04"),  # Ctrl-D (end of input) at the old key
    ((OLD_TEXT, NEW_TEXT), b"\x03"),  # Ctrl-C when asked to repeat the new key
], ids=["ctrl-c-old-key", "ctrl-d-old-key", "ctrl-c-new-key-repeat"])
def test_ctrl_c_or_d_at_a_key_prompt_on_a_terminal_cancels_with_12(
    tmp_path: Path, answers: tuple[str, ...], stop: bytes
) -> None:
    scenario = make_scenario(tmp_path)
    typed = [*(answer.encode() + b"\r" for answer in answers), stop]
    code, output = on_a_terminal(["rotate", "--db", str(scenario.db), "--quiet"],
                                 list(zip(KEY_PROMPTS, typed, strict=False)))
    assert code == 12, output
    assert "Cancelled; nothing was written." in output
    assert "Traceback" not in output and "Aborted!" not in output and "Usage:" not in output
    assert inspect(scenario).under == "old"
    assert sorted(p.name for p in scenario.db.parent.iterdir() if "keyrotate" in p.name) == []


def test_ctrl_c_inside_the_function_sqlite_calls_still_rolls_back_with_12(tmp_path: Path) -> None:
    """A signal handled while SQLite runs RangeWriter's function used to surface as "OperationalError:
    user-defined function raised exception" (exit 1, a traceback; measured: 4 single Ctrl-Cs in 10 mid-pass).
    Fault injection from the test side: the function sends the process a real SIGINT on its first call."""
    scenario = make_scenario(tmp_path, users=4)
    target = LocationTarget(next(loc for loc in CATALOGUE if loc.label == "trek_photos.passphrase"))
    with closing(sqlite3.connect(scenario.db, isolation_level=None)) as conn:
        rows = conn.execute(f"SELECT rowid FROM trek_photos WHERE {target.where().text} ORDER BY rowid").fetchall()
        writer = RangeWriter(conn)
        real = writer._text
        calls = 0

        def signalled(rowid: int, value: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                signal.raise_signal(signal.SIGINT)  # handled right here, inside the call SQLite made
            return real(rowid, value)

        conn.create_function(RangeWriter.FUNCTION, 2, signalled)  # in place of the writer's own
        previous = interrupts.install()
        try:
            conn.execute("BEGIN")
            with pytest.raises(interrupts.Interrupted):
                writer.write(target, [("new text", rowid) for (rowid,) in rows])
            conn.execute("ROLLBACK")
        finally:
            interrupts.restore(previous)
    assert calls == 1


def test_ctrl_c_pressed_again_and_again_rolls_back_cleanly(tmp_path: Path) -> None:
    """An operator mashing Ctrl-C: the first SIGINT stops the run, the others must not cut its clean-up short
    (it used to die by the signal, exit 130, with three chained tracebacks, and leave a full backup of the
    old database behind, or its marker, or a .partial file)."""
    scenario = make_scenario(tmp_path, users=300, photos_per_user=60)
    before = {p.name: p.read_bytes() for p in scenario.data_dir.iterdir()}
    process = subprocess.Popen([sys.executable, "-m", "keyrotate", *rotate_args(scenario)[:-2]],
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    line = ""
    while "Writing now" not in line and process.poll() is None:
        line = process.stderr.readline()
    sent = 0
    while process.poll() is None:
        process.send_signal(signal.SIGINT)
        sent += 1
        time.sleep(0.005)
    stderr = process.stderr.read()
    process.wait()
    assert sent >= 2
    assert process.returncode == 12, stderr
    assert "Traceback" not in stderr and "nothing was written" in stderr.lower()
    after = {p.name: p.read_bytes() for p in scenario.data_dir.iterdir()}
    assert {name: after[name] for name in before} == before  # travel.db and .encryption_key as they were
    # Nothing else but, at times, SQLite's own -wal and -shm (a connection the first signal caught mid-way was
    # not closed; SQLite reuses both, and the -wal holds no committed frame): no backup, marker or .partial.
    assert set(after) - set(before) <= {"travel.db-wal", "travel.db-shm"}


def test_a_signal_at_the_session_secret_step_is_exit_13_naming_it_and_the_rerun_finishes(tmp_path: Path) -> None:
    """A signal after the key file was written, before .jwt_secret changed: exit 12 "nothing was written"."""
    scenario = make_scenario(tmp_path)
    jwt = scenario.data_dir / ".jwt_secret"
    jwt.write_text("the session secret before\n")
    result = interrupted(tmp_path, rotate_args(scenario, "--rotate-jwt-secret"), "jwt-secret", signal.SIGTERM)
    assert result.returncode == 13, result.stderr
    assert "Interrupted (SIGTERM) after the commit" in result.stderr and "nothing was written" not in result.stderr
    assert f"Not done: {jwt} still holds the old session secret." in result.stderr
    assert jwt.read_text() == "the session secret before\n"
    assert inspect(scenario).under == "new" and inspect(scenario).key_file == "new"
    finished = rerun(result.stderr)
    assert finished.returncode == 0, finished.stderr
    assert jwt.read_text() != "the session secret before\n"


def test_a_signal_as_the_last_report_is_written_waits_for_it_to_be_whole(tmp_path: Path) -> None:
    """A signal as the --json report was being written gave exit 12 and "committed": false (then, once fixed,
    a cut report followed by an error document: two on stdout). The report comes out whole; the run was done."""
    scenario = make_scenario(tmp_path)
    result = interrupted(tmp_path, rotate_args(scenario, "--json"), "emit:1", signal.SIGINT)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # one document, the report
    assert "error" not in document and document["committed"] is True
    assert inspect(scenario).under == "new" and inspect(scenario).key_file == "new"


def test_an_audit_row_that_cannot_be_written_after_the_commit_is_exit_13_not_nothing_changed(tmp_path: Path) -> None:
    """A program that takes travel.db after the commit (a TREK started early) made the session secret's audit-log
    row fail: exit 10, "Nothing was changed", "committed": false, of a rotated database with a new .jwt_secret."""
    scenario = make_scenario(tmp_path)
    jwt = scenario.data_dir / ".jwt_secret"
    jwt.write_text("the session secret before\n")
    marker, go = tmp_path / "paused", tmp_path / "go"
    args = rotate_args(scenario, "--rotate-jwt-secret", "--wait", "0.2", "--json")
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", "jwt-secret", str(marker), str(go), *args],
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, process.communicate()
    with closing(sqlite3.connect(scenario.data_dir / "travel.db", isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # holds the write lock until the run has given up on it
        go.touch()
        stdout, stderr = process.communicate(timeout=60)
        holder.execute("ROLLBACK")
    assert process.returncode == 13, stderr
    assert "Nothing was changed" not in stderr and "recording that in TREK's audit log failed" in stderr
    assert "restart it" in stderr
    assert json.loads(stdout)["error"]["committed"] is True
    assert jwt.read_text() != "the session secret before\n"
    assert inspect(scenario).under == "new" and inspect(scenario).key_file == "new"


def test_a_generated_key_run_killed_before_its_commit_is_finished_by_the_command_it_named(tmp_path: Path) -> None:
    """"Writing now. If this run is interrupted (power cut, kill), run the same command again" led, with
    --generate-new-key, to "generated.key already exists" (exit 6): it now names the command that finishes it."""
    scenario = make_scenario(tmp_path)
    out = tmp_path / "generated.key"
    args = ["rotate", "--data-dir", str(scenario.data_dir), "--generate-new-key", "--new-key-out", str(out),
            "--workers", "0"]
    killed = subprocess.run([sys.executable, "-m", "tests.kill_at", *args], env=environment("before-commit"),
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    line = next(line for line in killed.stderr.splitlines() if line.startswith("Writing now."))
    words = shlex.split(line.split("run this command: ", 1)[1].rsplit(": it finishes the job.", 1)[0])
    assert words[:2] == ["keyrotate", "rotate"] and "--generate-new-key" not in words
    finished = subprocess.run([sys.executable, "-m", "keyrotate", *words[1:]], env=environment(),
                              capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    generated = Key(out.read_text().strip(), "generated")
    assert verify_database(scenario.data_dir / "travel.db", [generated]).ok
    assert scenario.key_file.read_text() == generated.reveal()


def test_a_compaction_stopped_by_another_program_after_the_commit_says_so(tmp_path: Path) -> None:
    """The warning blamed the disk ("free some space") when a program that took travel.db after the commit
    (a TREK started early) made the VACUUM fail."""
    scenario = make_scenario(tmp_path)
    marker, go = tmp_path / "paused", tmp_path / "go"
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", "after-commit", str(marker), str(go),
                                *rotate_args(scenario, "--wait", "0.2")],
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, process.communicate()
    with closing(sqlite3.connect(scenario.data_dir / "travel.db", isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        go.touch()
        stdout, stderr = process.communicate(timeout=60)
        holder.execute("ROLLBACK")
    assert "compacting the database failed" in stderr, stderr
    assert "another program opened the database after the commit" in stderr and "free some space" not in stderr
    assert inspect(scenario).under == "new"


def test_a_signal_once_the_session_secret_is_replaced_gives_a_rerun_that_does_not_replace_it_again(
        tmp_path: Path) -> None:
    """"Nothing else was left to do; the command below only confirms it" gave a command with --rotate-jwt-secret,
    which signed everyone out a second time."""
    scenario = make_scenario(tmp_path)
    jwt = scenario.data_dir / ".jwt_secret"
    jwt.write_text("the session secret before\n")
    result = interrupted(tmp_path, rotate_args(scenario, "--rotate-jwt-secret"), "jwt-replaced:1", signal.SIGINT)
    assert result.returncode == 13, result.stderr
    assert "Nothing else was left to do" in result.stderr
    command = result.stderr.split("To finish, run the same command again:\n", 1)[1].splitlines()[0]
    assert "--rotate-jwt-secret" not in command
    replaced = jwt.read_bytes()
    assert replaced != b"the session secret before\n"
    assert rerun(result.stderr).returncode == 0
    assert jwt.read_bytes() == replaced


def test_a_kill_after_the_commit_with_backup_path_keeps_that_backup_in_the_rerun(tmp_path: Path) -> None:
    """The printed rerun dropped --backup PATH: the old key was saved apart from that backup and no restore line
    named it."""
    scenario = make_scenario(tmp_path)
    backup = tmp_path / "before-rotation.db"
    args = rotate_args(scenario, "--backup", str(backup))
    killed = subprocess.run([sys.executable, "-m", "tests.kill_at", *args], env=environment("after-commit"),
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    line = next(line for line in killed.stderr.splitlines() if line.startswith("Writing now."))
    assert "run the same command again" in line  # no generated key: the same command, --backup PATH with it
    finished = subprocess.run([sys.executable, "-m", "keyrotate", *args], env=environment(), capture_output=True,
                              text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    assert Path(f"{backup}.key").read_text() == OLD_TEXT
    assert f"{backup}" in finished.stderr and "To restore it and the old key" in finished.stderr


def test_a_generated_key_incident_run_killed_after_its_commit_names_a_rerun_with_the_checklist(
        tmp_path: Path) -> None:
    """The "Writing now" command left --incident out: run as printed after a kill, it finished the rotation and
    printed no checklist, the one thing the operator ran it for."""
    scenario = make_scenario(tmp_path)
    out = tmp_path / "generated.key"
    args = ["rotate", "--data-dir", str(scenario.data_dir), "--generate-new-key", "--new-key-out", str(out),
            "--workers", "0", "--incident"]
    killed = subprocess.run([sys.executable, "-m", "tests.kill_at", *args], env=environment("after-verify"),
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    line = next(line for line in killed.stderr.splitlines() if line.startswith("Writing now."))
    words = shlex.split(line.split("run this command: ", 1)[1].rsplit(": it finishes the job.", 1)[0])
    assert "--incident" in words
    finished = subprocess.run([sys.executable, "-m", "keyrotate", *words[1:]], env=environment(),
                              capture_output=True, text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("Secrets readable with the suspected key: ")
    assert not finished.stdout.startswith("Secrets readable with the suspected key: 0 ")
    said = next(line for line in finished.stderr.splitlines() if line.startswith("The leak checklist is of "))
    assert ".keyrotate-backup-" in said  # the database is rotated: what the old key opened is in the backup


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device", "backups/x"),
                                     CannotWriteError("Cannot create backups/x: No space left on device.")],
                         ids=["OSError", "KeyrotateError"])
def test_any_failure_after_the_commit_is_exit_13_with_what_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    failure: Exception) -> None:
    """A step after the engine's COMMIT that failed in a way nothing named (an error of the file system, of a
    later step) ended with exit 11 and "committed": false, of a database every secret was under the new key in.
    The failure is injected into the step after the commit; the rotation itself is real."""
    from keyrotate.cli import rotate as rotate_command

    def failing(*_args: object) -> None:
        raise failure

    monkeypatch.setattr(rotate_command, "finish_rotation", failing)
    scenario = make_scenario(tmp_path)
    result = CliRunner().invoke(main, [*rotate_args(scenario), "--json"], catch_exceptions=False)
    assert result.exit_code == 13, result.output
    document = json.loads(result.stdout)
    assert document["error"]["committed"] is True
    assert "Stopped by an error (" in document["error"]["message"]
    assert "after the commit" in document["error"]["message"] and "run the same command again" in document["error"]["message"]
    assert inspect(scenario).under == "new"


@pytest.mark.parametrize("point", ["after-verify", "key-file-renamed"])
def test_an_incident_rerun_with_backup_path_reads_its_checklist_and_zip_keys_from_that_backup(
        tmp_path: Path, point: str) -> None:
    """With --backup PATH the rerun looked only beside travel.db: "Secrets readable ...: 0" (killed before the key
    file was written), or no checklist and every ZIP "left as it is" with exit 8 (killed after)."""
    scenario = make_scenario(tmp_path)
    zips = _with_backups(scenario, tmp_path, 1)
    backup = tmp_path / "elsewhere" / "pre.db"
    backup.parent.mkdir()
    args = rotate_args(scenario, "--backup", str(backup), "--incident", "--rekey-backups")
    killed = subprocess.run([sys.executable, "-m", "tests.kill_at", *args], env=environment(point),
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = subprocess.run([sys.executable, "-m", "keyrotate", *args], env=environment(), capture_output=True,
                           text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Secrets readable with the suspected key: ")
    assert not again.stdout.startswith("Secrets readable with the suspected key: 0 ")
    assert f"The leak checklist is of {backup}" in again.stderr
    assert "LEFT AS IT IS" not in again.stdout + again.stderr and _zip_keys(scenario, zips) == ["new"]


def test_an_incident_rerun_after_discard_old_key_gives_no_checklist_of_the_new_key(tmp_path: Path) -> None:
    """The rerun labelled the new key (in .encryption_key by then) "the suspected key" and listed the ZIPs as
    exposed under it. (--rekey-backups with --discard-old-key is refused: see test_old_key.)"""
    scenario = make_scenario(tmp_path)
    zips = _with_backups(scenario, tmp_path, 1)
    args = rotate_args(scenario, "--discard-old-key", "--incident")
    first = subprocess.run([sys.executable, "-m", "keyrotate", *args], env=environment(), capture_output=True,
                           text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-m", "keyrotate", *args], env=environment(), capture_output=True,
                           text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert "No leak checklist: the database is under the new key already and the old key was not kept" in again.stderr
    assert str(zips[0]) not in again.stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_report_that_cannot_be_written_after_the_commit_is_exit_13_without_a_traceback(tmp_path: Path,
                                                                                         as_json: bool) -> None:
    """`rotate --incident > checklist.txt` on a full disk (here /dev/full): exit 11 "No space left on device ()"
    with nothing said of the rotated database, or exit 1 and two tracebacks with --json."""
    scenario = make_scenario(tmp_path)
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "keyrotate", *rotate_args(scenario, "--incident"),
                                 *(["--json"] * as_json)], env=environment(), stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120, check=False)
    assert result.returncode == 13, result.stderr
    assert "Traceback" not in result.stderr and "after the commit" in result.stderr
    assert "could not be written to standard output" in result.stderr
    assert inspect(scenario).under == "new" and inspect(scenario).key_file == "new"
