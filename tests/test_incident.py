"""rotate --incident and exposure as leak response: what they print must be true and usable as printed."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import termios
import time
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.operations.backup_zips import Opens, inspect_backup
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key, create_key_file, generate_key_text

from .conftest import TrekCopy, table_dump
from .test_revoke import add_tokens
from .ziphelpers import build_backup_zip

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _key_file(path: Path) -> Path:
    create_key_file(path, generate_key_text())
    return path


def _damage_one_secret(trek: TrekCopy) -> None:
    """One secret under a key nobody has: the rotation refuses with exit 8, nothing written."""
    with closing(sqlite3.connect(trek.db)) as conn, conn:
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id = 2",
                     (Cipher(Key("a third key", "x"), Scheme.API).seal(b"whatever"),))


def _incident(trek: TrekCopy, tmp_path: Path, *extra: str) -> list[str]:
    return ["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(_key_file(tmp_path / "new.key")),
            "--incident", *extra]


def test_a_failed_incident_rotation_with_json_writes_one_json_document(trek4: TrekCopy, tmp_path: Path) -> None:
    """D13: the text checklist used to come first on stdout, before the JSON error document."""
    _damage_one_secret(trek4)
    before = table_dump(trek4.db)
    result = CliRunner().invoke(main, [*_incident(trek4, tmp_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 8
    document = json.loads(result.stdout)  # the whole of stdout, nothing before or after
    assert document["error"]["exit_code"] == 8
    assert document["exposure"]["totals"]["exposed"] == len(trek4.encrypted_entries()) - 1
    assert "Secrets readable" not in result.stdout
    assert table_dump(trek4.db) == before


def test_a_wrong_old_key_prints_no_all_clear(trek4: TrekCopy, tmp_path: Path) -> None:
    """D13: exit 7 used to print "Secrets readable with the suspected key: 0": an all-clear for a failed run."""
    wrong = _key_file(tmp_path / "wrong.key")
    # With --data-dir the key TREK uses there is tried first: it must be wrong too (TREK made itself a new one).
    trek4.data_dir.joinpath(".encryption_key").write_bytes(wrong.read_bytes())
    args = [*_incident(trek4, tmp_path), "--old-key-file", str(wrong)]
    text = CliRunner().invoke(main, args, catch_exceptions=False)
    assert text.exit_code == 7
    assert "Secrets readable" not in text.stdout and text.stdout == ""
    assert "No leak checklist" in text.stderr
    as_json = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert as_json.exit_code == 7
    document = json.loads(as_json.stdout)
    assert document["error"]["kind"] == "wrong_key" and "exposure" not in document


def test_a_failed_incident_rotation_heads_its_checklist_as_failed(trek4: TrekCopy, tmp_path: Path) -> None:
    _damage_one_secret(trek4)
    result = CliRunner().invoke(main, _incident(trek4, tmp_path), catch_exceptions=False)
    assert result.exit_code == 8
    first, rest = result.stdout.split("\n", 1)
    assert first.startswith("ROTATION FAILED (exit 8): nothing was rotated")
    assert f"Secrets readable with the suspected key: {len(trek4.encrypted_entries()) - 1} (" in rest


def _checklist_line(stdout: str, what: str) -> str:
    return next(line.strip() for line in stdout.splitlines() if f"] {what}:" in line)


def test_what_the_run_revoked_is_ticked_off_and_the_rest_stays_open(trek4: TrekCopy, tmp_path: Path) -> None:
    """D7: the links and invites the run had just deleted were still listed as tasks ("[ ] ... Do: delete")."""
    add_tokens(trek4)
    (trek4.data_dir / ".jwt_secret").write_text("a session secret of the incident tests\n")
    args = [*_incident(trek4, tmp_path), "--rotate-jwt-secret", "--revoke-share-links", "--expire-invites"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    for what, flag in [("session-signing secret", "--rotate-jwt-secret"), ("public trip share links",
                       "--revoke-share-links"), ("public journey share links", "--revoke-share-links"),
                       ("open registration invites", "--expire-invites")]:
        line = _checklist_line(result.stdout, what)
        assert line.startswith("[x]") and f"done by this run ({flag})" in line, line
    deleted = re.search(r"expired \(deleted\) (\d+) open invite", result.stderr)
    assert deleted is not None  # the checklist lists what leaked: the invites the run deleted
    assert _checklist_line(result.stdout, "open registration invites").startswith(
        f"[x] open registration invites: {deleted[1]} (")
    assert _checklist_line(result.stdout, "users with a local password").startswith("[ ]")
    with closing(sqlite3.connect(trek4.db)) as conn:  # what the ticks claim is true of the database
        assert conn.execute("SELECT count(*) FROM share_tokens").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM journey_share_tokens").fetchone()[0] == 0
    document = json.loads(CliRunner().invoke(main, [
        "rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(_key_file(tmp_path / "newer.key")),
        "--incident", "--expire-invites", "--json"], catch_exceptions=False).stdout)
    done = {f["what"]: f["done"] for f in document["exposure"]["beyond"]}
    assert done["open registration invites"] and not done["public trip share links"]


def test_a_dry_run_ticks_nothing_off(trek4: TrekCopy, tmp_path: Path) -> None:
    add_tokens(trek4)
    args = [*_incident(trek4, tmp_path), "--revoke-share-links", "--expire-invites", "--dry-run"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "done by this run" not in result.stdout
    for what in ("public trip share links", "public journey share links", "open registration invites"):
        assert _checklist_line(result.stdout, what).startswith("[ ]")


def test_new_key_files_readable_by_all_get_their_chmod_line(trek4: TrekCopy, tmp_path: Path) -> None:
    """D15: the fresh key and session secret landed world-readable (modes kept) with no step in the checklist."""
    (trek4.data_dir / ".encryption_key").chmod(0o644)
    (trek4.data_dir / ".jwt_secret").write_text("a session secret of the incident tests\n")
    (trek4.data_dir / ".jwt_secret").chmod(0o640)  # TREK's group reads it: not "every local user"
    result = CliRunner().invoke(main, [*_incident(trek4, tmp_path), "--rotate-jwt-secret"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    line = _checklist_line(result.stdout, "new key files readable by every local user")
    assert line.startswith("[ ]")
    command = line.split("Do: `", 1)[1].split("`", 1)[0]
    assert shlex.split(command) == ["chmod", "o-rwx", str((trek4.data_dir / ".encryption_key").absolute())]
    assert stat.S_IMODE((trek4.data_dir / ".encryption_key").stat().st_mode) == 0o644  # not changed by keyrotate
    subprocess.run(shlex.split(command), check=True)  # runs as printed
    assert stat.S_IMODE((trek4.data_dir / ".encryption_key").stat().st_mode) == 0o640
    (tmp_path / "x").mkdir()
    again = CliRunner().invoke(main, [*_incident(trek4, tmp_path / "x"), "--old-key-file",
                                      str(tmp_path / "new.key")], catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    assert "readable by every local user" not in again.stdout


def test_the_session_secret_command_runs_as_printed(trek4: TrekCopy, tmp_path: Path) -> None:
    """D6: it said `keyrotate rotate-jwt-secret --data-dir DIR`, which fails with "DIR does not exist"."""
    data_dir = tmp_path / "a dir with 'quotes'" / "data"
    data_dir.parent.mkdir()
    trek4.data_dir.rename(data_dir)
    (data_dir / ".jwt_secret").write_text("a session secret of the incident tests\n")
    listed = CliRunner().invoke(main, ["exposure", "--data-dir", str(data_dir), "--no-copies"], catch_exceptions=False)
    line = _checklist_line(listed.stdout, "session-signing secret")
    command = shlex.split(line.split("Do: replace it, which signs everyone out: `", 1)[1].split("`", 1)[0])
    assert command[:2] == ["keyrotate", "rotate-jwt-secret"] and "DIR" not in command
    ran = subprocess.run([sys.executable, "-m", "keyrotate", *command[1:]], capture_output=True, text=True,
                         env=_env(), check=False)
    assert ran.returncode == 0, ran.stderr
    assert (data_dir / ".jwt_secret").read_text() != "a session secret of the incident tests\n"


def test_the_plaintext_note_names_the_audit_command_to_run(trek3: TrekCopy) -> None:
    listed = CliRunner().invoke(main, ["exposure", "--data-dir", str(trek3.data_dir), "--no-copies"],
                                catch_exceptions=False)
    note = next(line for line in listed.stdout.splitlines() if "stored in PLAINTEXT" in line)
    command = shlex.split(note.split("`", 2)[1])
    assert command == ["keyrotate", "audit", "--db", str(trek3.db.absolute())]
    ran = subprocess.run([sys.executable, "-m", "keyrotate", *command[1:]], capture_output=True, text=True,
                         env=_env(), check=False)
    assert ran.returncode == 0 and "plaintext" in ran.stdout


def _a_zip_and_the_key_file(trek: TrekCopy, key_file: Path) -> Path:
    """A backup ZIP of the database as it is in data/backups/, and ``key_file`` (0600) holding the key it is under."""
    folder = trek.data_dir / "backups"
    folder.mkdir()
    build_backup_zip(trek.db, folder / "backup-2026-01-01T00-00-00.zip")
    key_file.write_text(trek.key.reveal())
    key_file.chmod(0o600)
    return key_file


def test_a_same_key_run_does_not_call_its_zips_under_the_old_key(trek4: TrekCopy, tmp_path: Path) -> None:
    """D6: --encrypt-plaintext with the key in use warned that ZIPs under that very key "stay under the old key"."""
    current = _a_zip_and_the_key_file(trek4, tmp_path / "current.key")
    result = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(current),
                                       "--encrypt-plaintext", "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "stay under the old key" not in result.stderr
    other = _key_file(tmp_path / "other.key")  # a real change of key: the warning is still given
    changed = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(other),
                                        "--yes"], catch_exceptions=False)
    assert changed.exit_code == 0, changed.stderr
    assert "1 backup ZIP(s) were not re-encrypted by this run and stay under the old key" in changed.stderr


def test_the_rekey_command_reads_the_old_key_where_it_was_given(trek4: TrekCopy, tmp_path: Path) -> None:
    """D6: without a saved old key the command said `--old-key-file OLD.key` though the run had read it from a file."""
    old = _a_zip_and_the_key_file(trek4, tmp_path / "old.key")
    new = _key_file(tmp_path / "new.key")
    result = CliRunner().invoke(main, ["rotate", "--db", str(trek4.db), "--old-key-file", str(old), "--new-key-file",
                                       str(new), "--yes", "--discard-old-key"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    line = result.stderr.split("Re-encrypt them now with:\n", 1)[1].splitlines()[0]
    words = shlex.split(line)
    assert "OLD.key" not in words and words[words.index("--old-key-file") + 1] == str(old.absolute())
    ran = subprocess.run([sys.executable, "-m", "keyrotate", *words[1:]], capture_output=True, text=True,
                         env=_env(), check=False)
    assert ran.returncode == 0, ran.stderr


def _paused_exposure(tmp_path: Path, trek: TrekCopy, fmt: str, point: str) -> tuple[subprocess.Popen[str], Path]:
    marker, go = tmp_path / "paused", tmp_path / "go"
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", point, str(marker), str(go), "exposure",
                                "--data-dir", str(trek.data_dir), "--no-copies", "--format", fmt],
                               cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, process.communicate()
    return process, go


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_json_report_is_closed_and_called_incomplete(trek4: TrekCopy, tmp_path: Path,
                                                                      signum: int) -> None:
    """D8: the stream was cut mid-array (invalid JSON) while stderr said "nothing was written"."""
    process, go = _paused_exposure(tmp_path, trek4, "json", "rows:3")
    process.send_signal(signum)
    time.sleep(0.2)
    go.touch()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 12, stderr
    document = json.loads(stdout)  # a whole document
    assert document["complete"] is False and document["error"]["exit_code"] == 12
    listed = len(document["secrets"])
    assert 0 < listed < len(trek4.encrypted_entries()) and "totals" not in document
    assert "INCOMPLETE" in stderr and f"the {listed} secret(s) found before the stop" in stderr
    assert "nothing was written" not in stderr


def test_an_interrupted_csv_report_is_called_incomplete(trek4: TrekCopy, tmp_path: Path) -> None:
    process, go = _paused_exposure(tmp_path, trek4, "csv", "rows:3")
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    go.touch()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 12, stderr
    rows = stdout.splitlines()[1:]
    assert 0 < len(rows) < len(trek4.encrypted_entries())
    assert "INCOMPLETE" in stderr and f"({len(rows)} secret(s) listed)" in stderr
    assert "nothing was written" not in stderr


def test_a_reader_that_goes_away_ends_the_run_quietly(trek4: TrekCopy, tmp_path: Path) -> None:
    """D8: `exposure | head` ended with "Error: Broken pipe ()" and exit 11, "cannot write (read-only, disk full)"."""
    process, go = _paused_exposure(tmp_path, trek4, "json", "rows:1")
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before the first record is written
    go.touch()
    process.wait(timeout=60)
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert process.returncode == 141, stderr
    assert "Error" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr


@pytest.mark.skipif(not Path("/dev/ptmx").exists(), reason="needs a pseudo-terminal")
def test_json_exposure_shows_progress_and_each_copy_on_a_terminal(trek4: TrekCopy, tmp_path: Path) -> None:
    """D4: `exposure --format json > file` showed nothing on the terminal for the whole pass and every ZIP check."""
    folder = trek4.data_dir / "backups"
    folder.mkdir()
    zip_path = build_backup_zip(trek4.db, folder / "backup-2026-01-01T00-00-00.zip")
    master, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # tqdm draws nothing at 0 columns
    report = tmp_path / "exposure.json"
    with report.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "keyrotate", "exposure", "--data-dir", str(trek4.data_dir),
                                    "--format", "json"], env=_env(), stdout=out, stderr=terminal, cwd=ROOT)
    os.close(terminal)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert process.wait(timeout=60) == 0, seen.decode(errors="replace")
    screen = seen.decode(errors="replace")
    assert "exposure: " in screen and " values" in screen  # a tqdm bar per location
    assert f"Checking copy 1 of 1: {zip_path} ..." in screen
    assert json.loads(report.read_text())["totals"]["exposed"] == len(trek4.encrypted_entries())


def test_the_zip_note_names_a_rekey_command_that_runs_as_printed(trek4: TrekCopy, tmp_path: Path) -> None:
    """D6: the note said "re-encrypt it with `keyrotate rekey-backup`": no ZIP, no data directory."""
    folder = trek4.data_dir / "backups"
    folder.mkdir()
    zip_path = build_backup_zip(trek4.db, folder / "backup-2026-01-01T00-00-00.zip")
    old = trek4.key
    listed = CliRunner().invoke(main, ["exposure", "--data-dir", str(trek4.data_dir)], catch_exceptions=False)
    note = " ".join(next(line for line in listed.stdout.splitlines() if str(zip_path) in line).split())
    words = shlex.split(note.split("once the database is rotated `", 1)[1].split("`", 1)[0])
    assert words == ["keyrotate", "rekey-backup", str(zip_path.absolute()), "--data-dir",
                     str(trek4.data_dir.absolute())]
    new = _key_file(tmp_path / "new.key")
    rotated = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new),
                                        "--yes"], catch_exceptions=False)
    assert rotated.exit_code == 0, rotated.stderr
    ran = subprocess.run([sys.executable, "-m", "keyrotate", *words[1:]], capture_output=True, text=True,
                         env=_env(), check=False)
    assert ran.returncode == 0, ran.stderr
    assert inspect_backup(zip_path, [old]).keys[0].opens == Opens.NONE
    assert inspect_backup(zip_path, [Key(new.read_text().strip(), "new")]).keys[0].opens == Opens.ALL


def test_a_pasted_key_with_a_line_break_is_tried_trimmed_and_said(trek4: TrekCopy) -> None:
    """D10: --key-env holding "KEY\\n" (used as is) opened nothing and exposure said "0 readable", no warning."""
    args = ["exposure", "--db", str(trek4.db), "--key-env", "LEAKED", "--no-copies"]
    pasted = CliRunner().invoke(main, args, env={"LEAKED": f" {trek4.key.reveal()}\n"}, catch_exceptions=False)
    assert pasted.exit_code == 0, pasted.stderr
    total = len(trek4.encrypted_entries())
    assert pasted.stdout.startswith(f"Secrets readable with the suspected key: {total} (")
    warning = " ".join(pasted.stderr.split())
    assert "has whitespace at its start or end" in warning and f"it opens {total} secret(s) the key as given does not" \
        in warning
    assert trek4.key.reveal() not in pasted.stdout + pasted.stderr
    clean = CliRunner().invoke(main, args, env={"LEAKED": trek4.key.reveal()}, catch_exceptions=False)
    assert clean.stdout.startswith(f"Secrets readable with the suspected key: {total} (")
    assert "trimmed" not in clean.stdout + clean.stderr


def test_what_is_not_there_is_nothing_to_do_and_plaintext_encrypted_by_the_run_is_said(trek3: TrekCopy,
                                                                                       tmp_path: Path) -> None:
    """A "[ ] public trip share links: 0 ... Do: delete the links" line could never be ticked; after
    --encrypt-plaintext the note still said to add --encrypt-plaintext to the rotation."""
    plain = "SELECT count(*) FROM settings WHERE key = 'webhook_url' AND value NOT LIKE 'enc:v1:%' AND value != ''"
    with closing(sqlite3.connect(trek3.db)) as conn:
        legacy = conn.execute(plain).fetchone()[0]  # legacy plaintext: what --encrypt-plaintext encrypts
    result = CliRunner().invoke(main, [*_incident(trek3, tmp_path), "--encrypt-plaintext"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    line = _checklist_line(result.stdout, "public trip share links")
    assert line.startswith("[x] public trip share links: 0 (") and line.endswith("nothing to do.")
    note = " ".join(next(x for x in result.stdout.splitlines() if "stored in PLAINTEXT" in x).split())
    with closing(sqlite3.connect(trek3.db)) as conn:
        assert conn.execute(plain).fetchone()[0] == 0
    assert legacy >= 1 and f"this run encrypted {legacy} of them (--encrypt-plaintext)" in note
    assert "added to the rotation" not in note


def _exposure_line(trek: TrekCopy, key_file: Path, what: str) -> str:
    listed = CliRunner().invoke(main, ["exposure", "--data-dir", str(trek.data_dir), "--key-file", str(key_file)],
                                catch_exceptions=False)
    assert listed.exit_code == 0, listed.stderr
    assert "Secrets readable with the suspected key: 0 " in listed.stdout
    return _checklist_line(listed.stdout, what)


def test_the_session_secret_replaced_after_the_rotation_is_done_in_a_later_exposure(trek4: TrekCopy,
                                                                                    tmp_path: Path) -> None:
    """D16: after the whole leak response, `exposure` with the leaked key still said "[ ] ... replace it"."""
    leaked = tmp_path / "leaked.key"
    leaked.write_text(trek4.key.reveal())
    leaked.chmod(0o600)
    rotated = CliRunner().invoke(main, [*_incident(trek4, tmp_path), "--rotate-jwt-secret"], catch_exceptions=False)
    assert rotated.exit_code == 0, rotated.stderr
    same_key = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file",
                                         str(tmp_path / "new.key"), "--encrypt-plaintext", "--yes"],
                                  catch_exceptions=False)  # a later run with the key in use rotates nothing
    assert same_key.exit_code == 0, same_key.stderr
    for copy in trek4.data_dir.glob("travel.db.keyrotate-*"):  # step 5 of the runbook: the copies are deleted
        copy.unlink()
    line = _exposure_line(trek4, leaked, "session-signing secret")
    assert line.startswith("[x]") and "TREK's audit log shows the session secret replaced" in line


def test_a_session_secret_replaced_before_the_rotation_is_still_a_task(trek4: TrekCopy, tmp_path: Path) -> None:
    leaked = tmp_path / "leaked.key"
    leaked.write_text(trek4.key.reveal())
    leaked.chmod(0o600)
    replaced = CliRunner().invoke(main, ["rotate-jwt-secret", "--data-dir", str(trek4.data_dir)],
                                  catch_exceptions=False)
    assert replaced.exit_code == 0, replaced.stderr
    rotated = CliRunner().invoke(main, [*_incident(trek4, tmp_path)], catch_exceptions=False)
    assert rotated.exit_code == 0, rotated.stderr
    assert _exposure_line(trek4, leaked, "session-signing secret").startswith("[ ]")


def test_the_audit_fix_command_names_the_real_data_directory(trek3: TrekCopy, tmp_path: Path) -> None:
    """D6: audit's (and exposure's plaintext rows') fix said `keyrotate rotate --data-dir DIR ...`."""
    data_dir = tmp_path / "my data" / "data"
    data_dir.parent.mkdir()
    trek3.data_dir.rename(data_dir)
    audited = CliRunner().invoke(main, ["audit", "--data-dir", str(data_dir), "--format", "json"],
                                 catch_exceptions=False)
    fixes = {f["fix"] for f in json.loads(audited.stdout)["findings"] if "--encrypt-plaintext" in f["fix"]}
    assert fixes
    command = shlex.split(next(f for f in fixes if f.startswith("keyrotate rotate")).split(" (", 1)[0])
    assert command[command.index("--data-dir") + 1] == str(data_dir.absolute()) and "DIR" not in command
    current = tmp_path / "current.key"
    current.write_text((data_dir / ".encryption_key").read_text())
    current.chmod(0o600)
    command[command.index("NEW.key")] = str(current)  # the one word left to the operator: the key to rotate to
    ran = subprocess.run([sys.executable, "-m", "keyrotate", *command[1:], "--yes"], capture_output=True, text=True,
                         env=_env(), check=False)
    assert ran.returncode == 0, ran.stderr


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_session_secret_failing_after_the_commit_keeps_the_checklist(trek4: TrekCopy, tmp_path: Path,
                                                                       as_json: bool) -> None:
    """.jwt_secret not replaced after the commit (exit 13): the run ended without the checklist it had read."""
    backup = tmp_path / "travel.db.before"
    Path(f"{backup}.jwt_secret").write_text("not keyrotate's")  # where the old session secret is to be saved
    args = [*_incident(trek4, tmp_path), "--rotate-jwt-secret", "--backup", str(backup), *(["--json"] * as_json)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 13, result.stderr
    total = len(trek4.encrypted_entries())
    if as_json:
        document = json.loads(result.stdout)
        assert document["error"]["committed"] is True
        assert document["exposure"]["totals"]["exposed"] == total
        session = next(f for f in document["exposure"]["beyond"] if f["what"] == "session-signing secret")
        assert session["done"] is False
    else:
        heading, checklist = result.stdout.split("\n\n", 1)
        assert heading.startswith("ROTATION NOT FINISHED (exit 13): the database is under the new key")
        assert checklist.startswith(f"Secrets readable with the suspected key: {total} (")
        assert _checklist_line(checklist, "session-signing secret").startswith("[ ]")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_signal_after_the_commit_keeps_the_checklist(trek4: TrekCopy, tmp_path: Path, as_json: bool) -> None:
    """Ctrl-C after the COMMIT (exit 13) ended the run without the checklist it had read, and the printed
    rerun leaves --incident out (the old key is gone from the key file by then)."""
    marker, go = tmp_path / "paused", tmp_path / "go"
    args = [*_incident(trek4, tmp_path), "--workers", "0", *(["--json"] * as_json)]
    process = subprocess.Popen([sys.executable, "-m", "tests.pause_at", "after-verify", str(marker), str(go), *args],
                               cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    go.touch()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 13, stderr
    total = len(trek4.encrypted_entries())
    if as_json:
        document = json.loads(stdout)
        assert document["error"]["committed"] is True and document["error"]["exit_code"] == 13
        assert document["exposure"]["totals"]["exposed"] == total
    else:
        heading, checklist = stdout.split("\n\n", 1)
        assert heading.startswith("ROTATION NOT FINISHED (exit 13): the database is under the new key")
        assert checklist.startswith(f"Secrets readable with the suspected key: {total} (")


def test_an_incident_rerun_after_the_commit_names_the_old_key_not_the_new_one(trek4: TrekCopy,
                                                                             tmp_path: Path) -> None:
    """Run again with --incident once .encryption_key holds the new key: the checklist called that new key
    "the suspected key" ("opened with old key from .encryption_key") instead of reading the earlier run's backup."""
    args = _incident(trek4, tmp_path)
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    total = len(trek4.encrypted_entries())
    assert again.stdout.startswith(f"Secrets readable with the suspected key: {total} (")
    first_line = again.stdout.splitlines()[0]
    assert ".encryption_key" not in first_line and ".keyrotate-backup-" in first_line, first_line
    assert "is of" in again.stderr and ".keyrotate-backup-" in again.stderr


def test_an_incident_rerun_with_no_copy_from_before_gives_no_checklist_of_the_new_key(trek4: TrekCopy,
                                                                                     tmp_path: Path) -> None:
    args = [*_incident(trek4, tmp_path), "--no-backup", "--discard-old-key"]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    assert "Secrets readable with the suspected key" not in again.stdout
    assert "No leak checklist: the database is under the new key already" in again.stderr


def test_an_incident_rerun_does_not_call_zips_already_under_the_new_key_exposed(trek4: TrekCopy,
                                                                              tmp_path: Path) -> None:
    """Run again, the checklist's copies were checked with the key in .encryption_key (the new one by then): the
    ZIPs the first run re-encrypted were listed as "the suspected key opens all ... re-encrypt it or delete it"."""
    folder = trek4.data_dir / "backups"
    folder.mkdir()
    zip_path = build_backup_zip(trek4.db, folder / "backup-2026-01-01T00-00-00.zip")
    args = [*_incident(trek4, tmp_path), "--rekey-backups"]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    assert again.stdout.startswith(f"Secrets readable with the suspected key: {len(trek4.encrypted_entries())} (")
    assert str(zip_path) not in again.stdout


def test_on_a_fallback_install_the_final_checklist_names_the_saved_session_secret_not_the_new_one(
        trek4: TrekCopy, tmp_path: Path) -> None:
    """The copies were checked before --rotate-jwt-secret replaced .jwt_secret: the checklist said to delete
    .jwt_secret ("file holding the suspected key"), already replaced, and never named <backup>.jwt_secret, which
    holds the leaked key (on such an install the session secret is the key)."""
    jwt = trek4.data_dir / ".jwt_secret"
    jwt.write_text(trek4.key.reveal() + "\n")
    (trek4.data_dir / ".encryption_key").unlink()
    result = CliRunner().invoke(main, [*_incident(trek4, tmp_path), "--rotate-jwt-secret"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    holding = [line for line in result.stdout.splitlines() if "(file holding the suspected key)" in line]
    assert holding and all(".keyrotate-backup-" in line for line in holding), holding
    assert any(line.split(" (file holding")[0].endswith(".jwt_secret") for line in holding)
