"""Replacing data/.jwt_secret, the .jwt_secret-fallback order (with a crash between the two writes), and the
rotations recorded in TREK's audit_log table. Real fixtures, real CLI."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key

from .conftest import TrekCopy
from .test_lifecycle import run_keyrotate


def audit_rows(db: Path) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT action, resource, details, user_id, ip FROM audit_log "
                            "WHERE action LIKE 'keyrotate.%' ORDER BY id").fetchall()


def make_fallback(trek: TrekCopy) -> str:
    """An install from before April 2026: no .encryption_key, the secrets are under .jwt_secret."""
    key_text = trek.key.reveal()
    (trek.data_dir / ".jwt_secret").write_text(key_text + "\n")
    (trek.data_dir / ".encryption_key").unlink()
    return key_text


def saved_jwt(data_dir: Path) -> Path:
    return next(data_dir.glob(".jwt_secret.keyrotate-old-*"))


def test_rotate_jwt_secret_replaces_it_saves_the_old_one_and_logs(trek: TrekCopy) -> None:
    jwt = trek.data_dir / ".jwt_secret"
    old = jwt.read_text()
    key_before = (trek.data_dir / ".encryption_key").read_text()
    jwt.chmod(0o640)  # TREK reading it through its group: the mode is kept
    result = CliRunner().invoke(main, ["rotate-jwt-secret", "--data-dir", str(trek.data_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    new = jwt.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", new) and new.strip() != old.strip()
    assert stat.S_IMODE(jwt.stat().st_mode) == 0o640
    saved = saved_jwt(trek.data_dir)
    assert saved.read_text() == old and stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert (trek.data_dir / ".encryption_key").read_text() == key_before  # encryption untouched
    [(action, resource, details, user_id, ip)] = audit_rows(trek.db)
    assert (action, resource, user_id, ip) == ("keyrotate.rotate_jwt_secret", "keyrotate", None, None)
    assert old.strip() not in details and new not in details
    assert new not in result.output and old.strip() not in result.output


def test_no_audit_log_skips_the_row(trek3: TrekCopy) -> None:
    result = CliRunner().invoke(main, ["rotate-jwt-secret", "--data-dir", str(trek3.data_dir), "--no-audit-log"],
                                catch_exceptions=False)
    assert result.exit_code == 0 and audit_rows(trek3.db) == []


def test_fallback_install_gets_its_encryption_key_first_even_across_a_crash(trek3: TrekCopy) -> None:
    key_text = make_fallback(trek3)
    args = ["rotate-jwt-secret", "--data-dir", str(trek3.data_dir)]
    crashed = run_keyrotate(args, kill_at="jwt-secret")
    assert crashed.returncode == -9, crashed.stderr
    # Between the two writes: encryption has its own file with the key in use, .jwt_secret is as it was.
    assert (trek3.data_dir / ".encryption_key").read_text() == key_text
    assert (trek3.data_dir / ".jwt_secret").read_text().strip() == key_text
    assert verify_database(trek3.db, [Key(key_text, "k")]).ok
    assert run_keyrotate(["verify", "--data-dir", str(trek3.data_dir), "-q"]).returncode == 0

    finished = run_keyrotate(args)
    assert finished.returncode == 0, finished.stderr
    assert (trek3.data_dir / ".jwt_secret").read_text().strip() != key_text
    assert (trek3.data_dir / ".encryption_key").read_text() == key_text
    assert run_keyrotate(["verify", "--data-dir", str(trek3.data_dir), "-q"]).returncode == 0
    assert [row[0] for row in audit_rows(trek3.db)] == ["keyrotate.rotate_jwt_secret"]


def test_rotate_with_jwt_secret_on_a_fallback_install_rotates_encryption_first(trek: TrekCopy, tmp_path: Path) -> None:
    old_text = make_fallback(trek)
    new_key_file = tmp_path / "new.key"
    args = ["rotate", "--data-dir", str(trek.data_dir), "--generate-new-key", "--new-key-out", str(new_key_file),
            "--rotate-jwt-secret", "--yes"]
    crashed = run_keyrotate(args, kill_at="jwt-secret")
    assert crashed.returncode == -9, crashed.stderr
    new_text = new_key_file.read_text().strip()
    assert (trek.data_dir / ".encryption_key").read_text().strip() == new_text
    assert (trek.data_dir / ".jwt_secret").read_text().strip() == old_text  # not yet replaced
    assert verify_database(trek.db, [Key(new_text, "new")]).ok

    finished = run_keyrotate(["rotate-jwt-secret", "--data-dir", str(trek.data_dir)])
    assert finished.returncode == 0, finished.stderr
    assert (trek.data_dir / ".jwt_secret").read_text().strip() not in (old_text, new_text)
    assert (trek.data_dir / ".encryption_key").read_text().strip() == new_text
    assert [row[0] for row in audit_rows(trek.db)] == ["keyrotate.rotate_encryption_key",
                                                        "keyrotate.rotate_jwt_secret"]


def test_rotation_records_itself_with_counts_and_no_key(trek: TrekCopy, new_key_file: Path) -> None:
    runner = CliRunner()
    base = ["rotate", "--data-dir", str(trek.data_dir), "--new-key-file", str(new_key_file)]
    dry = runner.invoke(main, [*base, "--dry-run", "--rotate-jwt-secret"], catch_exceptions=False)
    assert dry.exit_code == 0 and audit_rows(trek.db) == []
    assert "Would replace" in dry.stderr
    old = trek.key.reveal()
    done = runner.invoke(main, [*base, "--json"], catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    rotated = json.loads(done.stdout)["totals"]["rotated"]
    [(action, _, details, user_id, ip)] = audit_rows(trek.db)
    assert (action, user_id, ip) == ("keyrotate.rotate_encryption_key", None, None)
    assert json.loads(str(details))["secrets_rotated"] == rotated == len(trek.encrypted_entries())
    assert old not in str(details) and new_key_file.read_text().strip() not in str(details)


def test_no_audit_log_on_rotate(trek3: TrekCopy, new_key_file: Path) -> None:
    result = CliRunner().invoke(main, ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file",
                                       str(new_key_file), "--no-audit-log"], catch_exceptions=False)
    assert result.exit_code == 0 and audit_rows(trek3.db) == []


def test_rotate_jwt_secret_needs_a_data_dir(trek3: TrekCopy, new_key_file: Path) -> None:
    result = CliRunner().invoke(main, ["rotate", "--db", str(trek3.db), "--old-key-file",
                                       str(trek3.data_dir / ".encryption_key"), "--new-key-file", str(new_key_file),
                                       "--rotate-jwt-secret"])
    assert result.exit_code == 2 and "--rotate-jwt-secret needs --data-dir" in result.stderr


def test_fallback_key_file_holds_the_key_as_trek_reads_jwt_secret(trek3: TrekCopy) -> None:
    """TREK trims .jwt_secret with JavaScript's trim(): a BOM goes, a trailing U+001C stays. The new
    .encryption_key must hold exactly the key TREK used, or TREK reads no secret after the split."""
    key_text = make_fallback(trek3)
    (trek3.data_dir / ".jwt_secret").write_text("\ufeff" + key_text + "\x1c\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["rotate-jwt-secret", "--data-dir", str(trek3.data_dir), "--no-audit-log"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert (trek3.data_dir / ".encryption_key").read_text(encoding="utf-8") == key_text + "\x1c"


def test_discard_old_key_with_rotate_jwt_secret_is_refused_where_jwt_secret_is_the_key(trek3: TrekCopy,
                                                                                        new_key_file: Path) -> None:
    """There the printed restore needs the old key saved: without it, following the restore left TREK on the new
    .jwt_secret, reading none of its secrets. Refused before anything is touched; a normal install is not."""
    make_fallback(trek3)
    before = {p.name: p.read_bytes() for p in trek3.data_dir.iterdir()}
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file), "--rotate-jwt-secret",
            "--discard-old-key", "--yes"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2, refused.output
    assert "Drop --discard-old-key" in refused.stderr
    assert {p.name: p.read_bytes() for p in trek3.data_dir.iterdir()} == before
    (trek3.data_dir / ".encryption_key").write_text((trek3.data_dir / ".jwt_secret").read_text())  # a normal install
    allowed = CliRunner().invoke(main, args)
    assert allowed.exit_code == 0, allowed.output


def test_a_session_secret_that_cannot_be_replaced_after_the_commit_says_so(trek4: TrekCopy, tmp_path: Path) -> None:
    """The rotation stands, .jwt_secret does not change: that used to end in a bare "Error: ... ()" with exit 11,
    after every success line. Now exit 13, what is left, and the same command finishes it."""
    new_key_file, backup = tmp_path / "new.key", tmp_path / "travel.db.before"
    blocker = Path(f"{backup}.jwt_secret")
    blocker.write_text("not keyrotate's")  # where the old session secret is to be saved
    jwt_before = (trek4.data_dir / ".jwt_secret").read_bytes()
    args = ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out", str(new_key_file),
            "--backup", str(backup), "--rotate-jwt-secret", "--yes"]
    failed = run_keyrotate(args)
    assert failed.returncode == 13, failed.stderr
    assert "still holds the old session secret" in failed.stderr and "run the same command again" in failed.stderr
    assert "was not used" not in failed.stderr
    assert (trek4.data_dir / ".jwt_secret").read_bytes() == jwt_before
    assert (trek4.data_dir / ".encryption_key").read_text().strip() == new_key_file.read_text().strip()
    blocker.unlink()
    finished = run_keyrotate(args)
    assert finished.returncode == 0, finished.stderr
    assert (trek4.data_dir / ".jwt_secret").read_bytes() != jwt_before
    saved = [p.read_bytes() for p in trek4.data_dir.glob(".jwt_secret.keyrotate-old-*")]
    assert saved == [jwt_before]  # the rerun made no backup: the old secret is saved beside .jwt_secret


def test_a_key_file_that_cannot_be_written_names_it(tmp_path: Path) -> None:
    """generate-key --out (and --new-key-out) on a full disk said only "Error: No space left on device ()"."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))

    out = tmp_path / "new.key"
    done = subprocess.run([sys.executable, "-m", "keyrotate", "generate-key", "--out", str(out)], preexec_fn=limit,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 11, done.stderr
    assert f"Could not write the key to {out}" in done.stderr and not out.exists()


def test_a_wrong_old_key_where_jwt_secret_opens_the_secrets_says_so(trek3: TrekCopy, tmp_path: Path) -> None:
    """Exit 7 said only "check that it is the key TREK is running with": on an install that has been encrypting
    with its session secret, .jwt_secret is the key, and the message now says so with the option to give it."""
    (trek3.data_dir / ".jwt_secret").write_text(trek3.key.reveal())
    (trek3.data_dir / ".encryption_key").write_text("not the key these secrets are under, 0123456789")
    new_key = tmp_path / "new.key"
    new_key.write_text("a brand new key for the session-secret hint test, 0123456789")
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key), "--yes"]
    failed = run_keyrotate(args)
    assert failed.returncode == 7, failed.stderr
    jwt = trek3.data_dir / ".jwt_secret"
    assert f"{jwt} opens {len(trek3.encrypted_entries())} of them" in failed.stderr
    hinted = run_keyrotate([*args, "--old-key-file", str(jwt)])
    assert hinted.returncode == 0, hinted.stderr
    assert verify_database(trek3.db, [Key(new_key.read_text().strip(), "new")]).ok


def test_a_reader_of_stderr_that_goes_away_does_not_stop_the_steps_after_the_commit(trek4: TrekCopy,
                                                                                     tmp_path: Path) -> None:
    """`keyrotate rotate ... 2>&1 | head -5`: once head had exited, the next line on stderr raised a broken pipe,
    which ended the run after its COMMIT: backup ZIPs left under the old key, .jwt_secret not replaced, no exit 13."""
    import os
    import subprocess
    import sys

    from keyrotate.operations.backup_zips import Opens, inspect_backup

    from .test_lifecycle import REPO_ROOT
    from .ziphelpers import build_backup_zip

    (trek4.data_dir / "backups").mkdir()
    zip_path = trek4.data_dir / "backups" / "backup-2026-01-01T00-00-00.zip"
    build_backup_zip(trek4.db, zip_path)
    jwt_before = (trek4.data_dir / ".jwt_secret").read_bytes()
    new_key = tmp_path / "new.key"
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the first line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "keyrotate", "rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key",
             "--new-key-out", str(new_key), "--rekey-backups", "--rotate-jwt-secret", "--yes"],
            stdout=subprocess.DEVNULL, stderr=writer, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=120,
            check=False)
    finally:
        os.close(writer)
    assert done.returncode == 0
    assert (trek4.data_dir / ".jwt_secret").read_bytes() != jwt_before
    status = inspect_backup(zip_path, [Key(new_key.read_text().strip(), "new")])
    assert status.keys[0].opens is Opens.ALL


@pytest.mark.parametrize("rotate_jwt", [False, True], ids=["rotate", "rotate --rotate-jwt-secret"])
def test_a_fallback_install_gets_its_new_key_file_as_readable_as_jwt_secret(trek3: TrekCopy, new_key_file: Path,
                                                                          rotate_jwt: bool) -> None:
    """TREK read .jwt_secret through its group (0640): the new .encryption_key came out 0600, which TREK's user
    cannot read (TREK then reads nothing). As root, the owner and group follow too."""
    make_fallback(trek3)
    jwt = trek3.data_dir / ".jwt_secret"
    jwt.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(jwt, 0, 1000)
    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                            "--yes", *(["--rotate-jwt-secret"] * rotate_jwt)])
    assert result.returncode == 0, result.stderr
    written = (trek3.data_dir / ".encryption_key").stat()
    assert stat.S_IMODE(written.st_mode) == 0o640
    if os.geteuid() == 0:
        assert (written.st_uid, written.st_gid) == (0, 1000)


def test_rotate_jwt_secret_without_a_session_secret_is_refused_before_anything(trek4: TrekCopy,
                                                                             new_key_file: Path) -> None:
    """It used to rotate, then say after the commit that .jwt_secret "still holds the old session secret"."""
    (trek4.data_dir / ".jwt_secret").unlink()
    before = {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()}
    result = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file),
                            "--rotate-jwt-secret", "--yes"])
    assert result.returncode == 3, result.stderr
    assert "no session secret to replace" in result.stderr
    assert {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()} == before
