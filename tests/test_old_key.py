"""The old key is never lost: saved beside the backup, restored by the printed block, found by rekey-backup."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from keyrotate.operations.backup_zips import inspect_backup
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key, js_trim, resolve_trek_key

from .conftest import TrekCopy, copy_fixture
from .test_lifecycle import REPO_ROOT, run_keyrotate
from .ziphelpers import build_backup_zip


def run_printed(line: str) -> subprocess.CompletedProcess[str]:
    """Run what keyrotate printed, exactly, in bash; `keyrotate` is this checkout's."""
    shim = f'keyrotate() {{ "{sys.executable}" -m keyrotate "$@"; }}\n'
    environment = {k: v for k, v in os.environ.items() if k != "ENCRYPTION_KEY"}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(["bash", "-c", shim + line], capture_output=True, text=True, env=environment,
                          check=False, timeout=120)


def printed_after(stderr: str, heading: str) -> str:
    """The indented line printed right after the line starting with ``heading``."""
    lines = stderr.splitlines()
    index = next(n for n, line in enumerate(lines) if line.startswith(heading) or f" {heading}" in line)
    assert lines[index + 1].startswith("    ")
    return lines[index + 1].strip()


@pytest.fixture
def awkward(tmp_path: Path) -> TrekCopy:
    """A fixture copy under a path that needs quoting in a shell."""
    return copy_fixture("trek-3.0.15", tmp_path / "it's a $dir")


def saved_keys(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("travel.db.keyrotate-*.key"))


def test_the_printed_restore_block_brings_back_database_and_key(awkward: TrekCopy, new_key_file: Path) -> None:
    old_key = awkward.key
    rotated = run_keyrotate(["rotate", "--data-dir", str(awkward.data_dir), "--new-key-file", str(new_key_file)])
    assert rotated.returncode == 0, rotated.stderr
    (saved,) = saved_keys(awkward.data_dir)
    assert saved.read_text() == old_key.reveal()  # the exact text TREK used, no newline
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert f"The old key is saved in {saved}" in rotated.stderr
    assert verify_database(awkward.db, [old_key]).opened_by_first == 0  # rotated: the old key opens nothing now

    restored = run_printed(printed_after(rotated.stderr, "To restore it and the old key"))

    assert restored.returncode == 0, restored.stderr
    assert run_keyrotate(["verify", "--data-dir", str(awkward.data_dir)]).returncode == 0
    assert (awkward.data_dir / ".encryption_key").read_text() == old_key.reveal()


def test_on_the_jwt_fallback_the_restore_block_removes_the_new_key_file(trek3: TrekCopy, new_key_file: Path) -> None:
    enc = trek3.data_dir / ".encryption_key"
    (trek3.data_dir / ".jwt_secret").write_text(enc.read_text())
    enc.unlink()

    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)])
    assert rotated.returncode == 0, rotated.stderr
    assert saved_keys(trek3.data_dir) == []  # .jwt_secret is not replaced: the old key is still there
    restored = run_printed(printed_after(rotated.stderr, "To restore it"))

    assert restored.returncode == 0, restored.stderr
    assert not enc.exists()
    assert run_keyrotate(["verify", "--data-dir", str(trek3.data_dir)]).returncode == 0



def test_on_the_jwt_fallback_with_rotate_jwt_secret_the_restore_block_gives_trek_the_old_key(
    trek3: TrekCopy, new_key_file: Path
) -> None:
    """.jwt_secret is replaced by this run: deleting .encryption_key on restore would leave TREK on the new one."""
    old_key = trek3.key
    enc, jwt = trek3.data_dir / ".encryption_key", trek3.data_dir / ".jwt_secret"
    jwt.write_text(enc.read_text())
    enc.unlink()

    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--rotate-jwt-secret"])
    assert rotated.returncode == 0, rotated.stderr
    assert ".jwt_secret itself is not changed" not in rotated.stderr
    assert ".jwt_secret is replaced too" in rotated.stderr
    assert js_trim(jwt.read_text()) != old_key.reveal()  # replaced by this run
    restored = run_printed(printed_after(rotated.stderr, "To restore it and the old key"))

    assert restored.returncode == 0, restored.stderr
    assert resolve_trek_key(trek3.data_dir).key.same_secret_as(old_key)  # what TREK reads at its next start
    verified = run_keyrotate(["verify", "--data-dir", str(trek3.data_dir)])
    assert verified.returncode == 0, verified.stderr
    assert old_key.reveal() not in rotated.stderr + rotated.stdout + restored.stdout + restored.stderr


def test_with_no_backup_the_old_key_is_still_saved(trek3: TrekCopy, new_key_file: Path) -> None:
    old_key = trek3.key
    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--no-backup"])
    assert rotated.returncode == 0, rotated.stderr
    (saved,) = saved_keys(trek3.data_dir)
    assert saved.name.startswith("travel.db.keyrotate-oldkey-")
    assert saved.read_text() == old_key.reveal()
    assert str(saved) in rotated.stderr


def test_discard_old_key_saves_nothing(trek3: TrekCopy, new_key_file: Path) -> None:
    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--no-backup", "--discard-old-key"])
    assert rotated.returncode == 0, rotated.stderr
    assert saved_keys(trek3.data_dir) == []


def test_the_old_key_is_saved_before_the_key_file_is_replaced_and_only_once(
    trek3: TrekCopy, new_key_file: Path
) -> None:
    old_key = trek3.key
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)]
    killed = run_keyrotate(args, kill_at="key-file-temp")
    assert killed.returncode == -9
    (saved,) = saved_keys(trek3.data_dir)
    assert saved.read_text() == old_key.reveal()

    finished = run_keyrotate(args)

    assert finished.returncode == 0, finished.stderr
    assert saved_keys(trek3.data_dir) == [saved]  # the rerun found it rather than saving a second copy


@pytest.mark.parametrize("kind", ["dangling", "existing"])
def test_a_link_at_the_saved_key_name_is_not_followed(trek3: TrekCopy, new_key_file: Path, tmp_path: Path,
                                                      kind: str) -> None:
    backup = tmp_path / "travel.db.backup"
    victim = tmp_path / "victim"
    if kind == "existing":
        victim.write_text("precious")
    Path(f"{backup}.key").symlink_to(victim)

    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--backup", str(backup)])

    assert rotated.returncode == 0, rotated.stderr
    assert victim.read_text() == "precious" if kind == "existing" else not victim.exists()
    (saved,) = saved_keys(trek3.data_dir)  # another name, next to the database
    restored = run_printed(printed_after(rotated.stderr, "To restore it and the old key"))
    assert restored.returncode == 0, restored.stderr
    assert run_keyrotate(["verify", "--data-dir", str(trek3.data_dir)]).returncode == 0


def test_zips_left_under_the_old_key_are_named_and_the_printed_command_rekeys_them(
    trek3: TrekCopy, new_key_file: Path
) -> None:
    folder = trek3.data_dir / "backups"
    folder.mkdir()
    zips = [build_backup_zip(trek3.db, folder / name) for name in ("backup-1.zip", "auto-backup-2.zip")]

    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)])

    assert rotated.returncode == 0, rotated.stderr
    (saved,) = saved_keys(trek3.data_dir)
    warning = next(line for line in rotated.stderr.splitlines() if "stay under the old key" in line)
    assert f"saved at {saved}" in warning and "backup-1.zip" in warning and "auto-backup-2.zip" in warning
    command = printed_after(rotated.stderr, "WARNING: 2 backup ZIP(s) were not re-encrypted by this run")
    assert command.startswith("keyrotate rekey-backup ")

    rekeyed = run_printed(command)

    assert rekeyed.returncode == 0, rekeyed.stdout + rekeyed.stderr
    new_key = Key(new_key_file.read_text().strip(), "new")
    for zip_path in zips:
        assert inspect_backup(zip_path, [new_key]).keys[0].opens == "all"


def test_rekey_backup_after_a_rotation_finds_the_saved_old_key(trek3: TrekCopy, new_key_file: Path) -> None:
    folder = trek3.data_dir / "backups"
    folder.mkdir()
    zip_path = build_backup_zip(trek3.db, folder / "backup-1.zip")
    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)])
    assert rotated.returncode == 0, rotated.stderr

    # The advice printed after a rotation before this fix; it exited 8 ("the same as an old key").
    rekeyed = run_keyrotate(["rekey-backup", str(zip_path), "--data-dir", str(trek3.data_dir),
                             "--new-key-file", str(new_key_file)])

    assert rekeyed.returncode == 0, rekeyed.stdout + rekeyed.stderr
    assert inspect_backup(zip_path, [Key(new_key_file.read_text().strip(), "new")]).keys[0].opens == "all"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_run_as_root_the_saved_key_belongs_to_the_key_files_owner(trek3: TrekCopy, new_key_file: Path) -> None:
    for path in [trek3.data_dir, *trek3.data_dir.iterdir()]:
        os.chown(path, 1234, 1235)
    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)])
    assert rotated.returncode == 0, rotated.stderr
    (saved,) = saved_keys(trek3.data_dir)
    assert (saved.stat().st_uid, saved.stat().st_gid) == (1234, 1235)


def test_the_json_report_says_where_the_old_key_and_the_zip_command_are(trek3: TrekCopy, new_key_file: Path) -> None:
    (trek3.data_dir / "backups").mkdir()
    build_backup_zip(trek3.db, trek3.data_dir / "backups" / "backup-1.zip")
    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--json"])
    assert rotated.returncode == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    (saved,) = saved_keys(trek3.data_dir)
    assert report["old_key_saved"] == str(saved)
    assert str(saved) in report["restore_command"]
    assert report["backups_under_old_key"]["rekey_command"].startswith("keyrotate rekey-backup ")


def test_rekey_backup_with_both_keys_given_needs_no_key_file_in_the_data_dir(
    trek3: TrekCopy, new_key_file: Path, tmp_path: Path
) -> None:
    zip_path = build_backup_zip(trek3.db, tmp_path / "backup-1.zip")
    old = tmp_path / "old.key"
    old.write_text(trek3.key.reveal())
    for name in (".encryption_key", ".jwt_secret"):
        (trek3.data_dir / name).unlink(missing_ok=True)

    rekeyed = run_keyrotate(["rekey-backup", str(zip_path), "--data-dir", str(trek3.data_dir),
                             "--old-key-file", str(old), "--new-key-file", str(new_key_file)])

    assert rekeyed.returncode == 0, rekeyed.stdout + rekeyed.stderr


@pytest.mark.parametrize("point", ["after-commit", "after-verify", "key-file-temp"])
def test_rerun_after_a_kill_past_the_commit_saves_the_old_key_beside_that_runs_backup(
    trek3: TrekCopy, new_key_file: Path, point: str
) -> None:
    old_key = trek3.key
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)]
    assert run_keyrotate(args, kill_at=point).returncode == -9
    (backup,) = trek3.data_dir.glob("travel.db.keyrotate-backup-*[0-9Z]")

    again = run_keyrotate(args)

    assert again.returncode == 0, again.stderr
    assert saved_keys(trek3.data_dir) == [Path(f"{backup}.key")]  # not travel.db.keyrotate-oldkey-<time>.key
    assert Path(f"{backup}.key").read_text() == old_key.reveal()
    assert str(backup) in again.stderr
    restored = run_printed(printed_after(again.stderr, "To restore it and the old key"))
    assert restored.returncode == 0, restored.stderr
    assert (trek3.data_dir / ".encryption_key").read_text() == old_key.reveal()
    assert run_keyrotate(["verify", "--data-dir", str(trek3.data_dir)]).returncode == 0
    assert old_key.reveal() not in again.stderr + again.stdout


def test_rerun_with_an_undecodable_key_file_says_so_instead_of_a_traceback(
    trek3: TrekCopy, new_key_file: Path, tmp_path: Path
) -> None:
    old_file = tmp_path / "old.key"
    old_file.write_text(trek3.key.reveal())
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--old-key-file", str(old_file), "--new-key-file",
            str(new_key_file)]
    assert run_keyrotate(args, kill_at="after-verify").returncode == -9
    (trek3.data_dir / ".encryption_key").write_bytes(b"\xff\xfe")

    again = run_keyrotate(args)

    assert again.returncode == 13, again.stderr  # rotated: the same command finishes it once the file is fixed
    assert "Traceback" not in again.stderr and "saving the old key" in again.stderr


def test_the_printed_check_after_a_db_run_runs_as_printed(trek4: TrekCopy, new_key_file: Path) -> None:
    """With --db (no data directory) the step said `keyrotate verify --data-dir DIR`: a placeholder, exit 3 as
    printed. It now names the database and the new key file."""
    rotated = run_keyrotate(["rotate", "--db", str(trek4.db), "--old-key-file", str(trek4.data_dir / ".encryption_key"),
                             "--new-key-file", str(new_key_file), "--yes"])
    assert rotated.returncode == 0, rotated.stderr
    step = next(line for line in rotated.stderr.splitlines() if line.startswith("Step: Check: `"))
    checked = run_printed(step.split("`")[1])
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("name", [".encryption_key", ".jwt_secret"])
def test_trek_key_files_are_no_new_key_out(trek4: TrekCopy, name: str) -> None:
    """--new-key-out data/.encryption_key found the key in use there, took it for an earlier run's new key that
    the database is under, and said "nothing to do" with exit 0: the leaked key stayed. Nothing may change."""
    before = {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()}
    result = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out",
                            str(trek4.data_dir / name), "--yes"])
    assert result.returncode == 2, result.stderr
    assert "is TREK's own key file" in result.stderr
    assert {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()} == before


def test_the_session_secret_is_no_new_key_file(trek4: TrekCopy) -> None:
    """--new-key-file data/.jwt_secret made the session secret the encryption key, and the steps then said to
    delete .jwt_secret."""
    jwt = trek4.data_dir / ".jwt_secret"
    jwt.write_text("a session secret long enough to pass for a key 0123456789\n")
    before = {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()}
    result = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(jwt), "--yes"])
    assert result.returncode == 2, result.stderr
    assert "is TREK's session secret (.jwt_secret)" in result.stderr
    assert {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()} == before


def test_with_discard_old_key_the_restore_says_the_old_key_must_go_back_too(trek3: TrekCopy,
                                                                            new_key_file: Path) -> None:
    """The printed restore put the database back under the old key and left the new key in .encryption_key:
    TREK then read only the legacy plaintext. It must say the old key goes back too (keyrotate has no copy)."""
    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--discard-old-key"])
    assert rotated.returncode == 0, rotated.stderr
    key_file = trek3.data_dir / ".encryption_key"
    assert f"put the old key back in {key_file} too" in rotated.stderr
    as_json = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--json"])  # a rerun: nothing to do, no backup, nothing to restore
    assert json.loads(as_json.stdout)["restore_needs_old_key"] is False


def test_a_saved_old_key_needs_no_word_about_putting_it_back(trek3: TrekCopy, new_key_file: Path) -> None:
    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--json"])
    assert rotated.returncode == 0, rotated.stderr
    document = json.loads(rotated.stdout)
    assert document["restore_needs_old_key"] is False and document["old_key_saved"]
    assert "put the old key back" not in rotated.stderr


def test_a_trek_key_file_reached_through_a_link_is_no_new_key_out_either(trek4: TrekCopy, tmp_path: Path) -> None:
    """On a .jwt_secret-fallback install (no .encryption_key yet) --new-key-out LINK/.encryption_key, LINK a link
    to the data directory, wrote the new key where TREK reads its key before anything was rotated."""
    (trek4.data_dir / ".jwt_secret").write_text(trek4.key.reveal() + "\n")
    (trek4.data_dir / ".encryption_key").unlink()
    link = tmp_path / "link"
    link.symlink_to(trek4.data_dir)
    before = {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()}
    result = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--new-key-out",
                            str(link / ".encryption_key"), "--yes"])
    assert result.returncode == 2, result.stderr
    assert {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()} == before


def test_the_key_in_use_or_a_copy_of_the_session_secret_is_no_new_key(trek4: TrekCopy, tmp_path: Path) -> None:
    """--new-key-file data/.encryption_key ended "nothing to do" with exit 0 (the leaked key still in use); a copy
    of .jwt_secret became the encryption key."""
    before = {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()}
    in_use = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file",
                            str(trek4.data_dir / ".encryption_key"), "--yes"])
    assert in_use.returncode == 2, in_use.stderr
    assert "it holds the key in use, not a new one" in in_use.stderr
    copy = tmp_path / "copy-of-session-secret"
    copy.write_bytes((trek4.data_dir / ".jwt_secret").read_bytes())
    copied = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(copy), "--yes"])
    assert copied.returncode == 6, copied.stderr
    assert "TREK's session secret (a copy of it?)" in copied.stderr
    assert {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()} == before


def test_a_copy_of_the_key_in_use_given_as_the_new_key_is_warned_about(trek4: TrekCopy, tmp_path: Path) -> None:
    """It ended "already holds the new key ... nothing to do", exit 0 and not a word more: the leaked key stayed."""
    copy = tmp_path / "candidate.key"
    copy.write_bytes((trek4.data_dir / ".encryption_key").read_bytes())
    result = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(copy), "--yes"])
    assert "The new key given is the key TREK already uses" in result.stderr, result.stderr
    assert "nothing will be rotated and it stays in use" in result.stderr


def test_discard_old_key_with_rekey_backups_is_refused(trek4: TrekCopy, new_key_file: Path) -> None:
    """Killed between the key file and the ZIPs, such a run left every backup ZIP under a key kept nowhere."""
    before = {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()}
    result = run_keyrotate(["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file),
                            "--discard-old-key", "--rekey-backups", "--yes"])
    assert result.returncode == 2, result.stderr
    assert "--discard-old-key with --rekey-backups" in result.stderr
    assert {p.name: p.read_bytes() for p in trek4.data_dir.iterdir()} == before


def test_an_incident_rerun_after_a_no_backup_run_stopped_before_its_key_file_gives_no_zero_checklist(
        trek4: TrekCopy, new_key_file: Path) -> None:
    """Killed after the commit, before the key file (the old key still there), the rerun printed "Secrets
    readable with the suspected key: 0" and an empty checklist: the database was under the new key already."""
    args = ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file), "--no-backup",
            "--incident", "--yes"]
    killed = run_keyrotate(args, kill_at="after-verify")
    assert killed.returncode == -9, killed.stderr
    again = run_keyrotate(args)
    assert again.returncode == 0, again.stderr
    assert "Secrets readable with the suspected key: 0" not in again.stdout
    assert "No leak checklist: the old key opens none of the database's secrets" in again.stderr


def test_rekey_backup_with_no_old_key_left_calls_zips_under_the_key_in_use_done(trek3: TrekCopy,
                                                                              new_key_file: Path) -> None:
    """After the leak runbook's step 5 (the saved old key deleted), `rekey-backup --data-dir` on ZIPs already
    under the key in use exited 6, "Give the key the ZIPs were made under with --old-key-file"."""
    folder = trek3.data_dir / "backups"
    folder.mkdir()
    zip_path = build_backup_zip(trek3.db, folder / "backup-1.zip")
    rotated = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                             "--rekey-backups"])
    assert rotated.returncode == 0, rotated.stderr
    for key in saved_keys(trek3.data_dir):
        key.unlink()
    again = run_keyrotate(["rekey-backup", str(zip_path), "--data-dir", str(trek3.data_dir)])
    assert again.returncode == 0, again.stdout + again.stderr
    before_rotation = next(p for p in trek3.data_dir.glob("travel.db.keyrotate-backup-*") if p.suffix != ".key")
    old_zip = build_backup_zip(before_rotation, folder / "backup-0.zip")  # still under the old key
    left = run_keyrotate(["rekey-backup", str(old_zip), "--data-dir", str(trek3.data_dir)])
    assert left.returncode == 8, left.stdout + left.stderr
    assert "no old key is known for it" in left.stdout + left.stderr


def test_zips_under_an_older_rotations_key_are_rekeyed_with_its_saved_key(trek3: TrekCopy, tmp_path: Path) -> None:
    """A planned rotation months ago left the ZIPs under K0 (saved beside its backup); a rotation K1 -> K2 with
    --rekey-backups then left them "under another key" (exit 8): only this run's backup key was tried."""
    folder = trek3.data_dir / "backups"
    folder.mkdir()
    zips = [build_backup_zip(trek3.db, folder / f"backup-{n}.zip") for n in (1, 2)]
    keys = []
    for name in ("k1.key", "k2.key"):
        path = tmp_path / name
        path.write_text(f"a key for the {name} rotation, long enough 0123456789abcdef\n")
        path.chmod(0o600)
        keys.append(path)
    first = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(keys[0]), "--yes"])
    assert first.returncode == 0, first.stderr
    second = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(keys[1]),
                            "--rekey-backups", "--yes"])
    assert second.returncode == 0, second.stdout + second.stderr
    k2 = Key(keys[1].read_text().strip(), "k2")
    assert all(inspect_backup(z, [k2]).keys[0].opens == "all" for z in zips)
