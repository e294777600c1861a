"""TREK backup ZIPs built from the real fixtures: listing, rekeying, restoring, and ZIPs left alone."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import stat
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.operations.backup_rekey import rekey_backup
from keyrotate.operations.backup_zips import find_backups, list_backups
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key, create_key_file

from .conftest import TrekCopy, copy_fixture, opens_under
from .test_lifecycle import run_keyrotate
from .ziphelpers import UPLOADS, build_backup_zip, raw_members

NEW = Key("the new key for backup tests", "new test key")


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Send keyrotate's extracted copies to a directory this test can inspect afterwards."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield scratch
    assert list(scratch.iterdir()) == [], "an extracted travel.db was left behind"


def backups_dir(trek: TrekCopy) -> Path:
    folder = trek.data_dir / "backups"
    folder.mkdir(exist_ok=True)
    return folder


def extract_db(zip_path: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extract("travel.db", destination)
    return destination / "travel.db"


def test_list_says_which_key_opens_each_backup(trek4: TrekCopy, tmp_path: Path) -> None:
    folder = backups_dir(trek4)
    old_zip = build_backup_zip(trek4.db, folder / "backup-2026-03-14T02-30-00.zip")
    # A database half under the new key: one secret moved by hand, the way an interrupted script leaves it.
    entry = next(e for e in trek4.manifest if e["table"] == "users" and e["column"] == "maps_api_key")
    mixed = copy_fixture("trek-4.2-shape", tmp_path / "mixed")
    with closing(sqlite3.connect(mixed.db)) as conn:
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id = ?",
                     (Cipher(NEW, Scheme.API).seal(entry["plaintext"].encode()), entry["key"]["id"]))
        conn.commit()
    mixed_zip = build_backup_zip(mixed.db, folder / "auto-backup-2026-03-15.zip")
    damaged = folder / "backup-2026-03-16.zip"
    damaged.write_bytes(old_zip.read_bytes()[:5000])
    (folder / "notes.zip").write_bytes(old_zip.read_bytes())  # not a TREK backup name: ignored

    statuses = {Path(s.path).name: s for s in list_backups(trek4.data_dir, [trek4.key, NEW])}

    assert sorted(statuses) == sorted([old_zip.name, mixed_zip.name, damaged.name])
    total = len(trek4.encrypted_entries())
    old = statuses[old_zip.name]
    assert old.date == "2026-03-14 02:30:00"
    assert [(v.opens, v.opened, v.total) for v in old.keys] == [("all", total, total), ("none", 0, total)]
    assert [(v.opens, v.opened) for v in statuses[mixed_zip.name].keys] == [("some", total - 1), ("some", 1)]
    assert statuses[damaged.name].problem and not statuses[damaged.name].keys


@pytest.mark.parametrize("streamed", [False, True], ids=["seekable", "data-descriptors"])
def test_rekey_then_restore_round_trip(trek: TrekCopy, tmp_path: Path, streamed: bool) -> None:
    zip_path = build_backup_zip(trek.db, backups_dir(trek) / "backup-1.zip", streamed=streamed)
    zip_path.chmod(0o640)
    before_raw = raw_members(zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        before_infos = [(i.filename, i.date_time, i.external_attr, i.compress_type) for i in archive.infolist()]

    result = rekey_backup(zip_path, [trek.key], NEW)

    assert (result.outcome, result.rotated) == ("rekeyed", len(trek.encrypted_entries()))
    assert stat.S_IMODE(zip_path.stat().st_mode) == 0o640  # a replaced file keeps its mode
    assert [p.name for p in zip_path.parent.iterdir()] == ["backup-1.zip"]  # no partial file left
    after_raw = raw_members(zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        after_infos = [(i.filename, i.date_time, i.external_attr, i.compress_type) for i in archive.infolist()]
        for name, (content, _method, _level) in UPLOADS.items():
            assert archive.read(name) == content
    assert after_infos == before_infos  # same members, order, names, timestamps, attributes
    for name in before_raw:
        if name != "travel.db":
            assert after_raw[name] == before_raw[name], f"{name} is not byte-identical"
    assert after_raw["travel.db"] != before_raw["travel.db"]

    # Restore the backup the way an operator would, and read every secret with the new key.
    restored = extract_db(zip_path, tmp_path / "restored")
    assert verify_database(restored, [NEW]).ok
    with closing(sqlite3.connect(restored)) as conn:
        for entry in trek.encrypted_entries():
            assert opens_under(conn, entry, NEW), entry
            assert not opens_under(conn, entry, trek.key), entry


def test_rekey_again_and_dry_run_leave_the_zip_alone(trek4: TrekCopy) -> None:
    zip_path = build_backup_zip(trek4.db, backups_dir(trek4) / "backup-1.zip")
    original = zip_path.read_bytes()
    dry = rekey_backup(zip_path, [trek4.key], NEW, dry_run=True)
    assert (dry.outcome, dry.rotated) == ("would be rekeyed", len(trek4.encrypted_entries()))
    assert zip_path.read_bytes() == original
    assert rekey_backup(zip_path, [trek4.key], NEW).outcome == "rekeyed"
    rekeyed = zip_path.read_bytes()
    assert rekey_backup(zip_path, [trek4.key], NEW).outcome == "already on the new key"
    assert zip_path.read_bytes() == rekeyed


def _flip_upload_byte(zip_path: Path) -> None:
    data = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo("uploads/photos/IMG_0001.jpg")
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0xFF  # inside the stored photo
    zip_path.write_bytes(bytes(data))


def _flip_deflated_byte(zip_path: Path) -> None:
    data = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo("uploads/files/itinerary.pdf")
    start = info.header_offset + 30 + len(info.filename)
    for offset in range(start, start + info.compress_size, 7):  # wreck the deflate stream itself
        data[offset] ^= 0x5A
    zip_path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_flip_upload_byte, "CRC"),
        (_flip_deflated_byte, "cannot be read as a ZIP"),
        (lambda p: p.write_bytes(p.read_bytes()[:-200]), "ZIP"),
        (lambda p: p.write_bytes(b"this is not a zip"), "ZIP"),
    ],
    ids=["bad-crc-in-uploads", "bad-deflate-stream", "truncated", "not-a-zip"],
)
def test_damaged_zip_is_left_untouched_and_named(trek4: TrekCopy, damage: object, reason: str) -> None:
    zip_path = build_backup_zip(trek4.db, backups_dir(trek4) / "backup-1.zip")
    damage(zip_path)  # type: ignore[operator]
    before = zip_path.read_bytes()
    result = rekey_backup(zip_path, [trek4.key], NEW)
    assert result.outcome == "left as it is" and reason in result.reason
    assert zip_path.read_bytes() == before
    assert [p.name for p in zip_path.parent.iterdir()] == ["backup-1.zip"]


def test_zip_under_another_key_is_left_untouched(trek4: TrekCopy, tmp_path: Path) -> None:
    zip_path = build_backup_zip(trek4.db, backups_dir(trek4) / "backup-1.zip")
    before = zip_path.read_bytes()
    result = rekey_backup(zip_path, [Key("not the key of that day", "wrong")], NEW)
    assert result.outcome == "left as it is"
    assert "none of the old keys opens its secrets" in result.reason
    assert "keyrotate-extract-" not in result.reason  # names the ZIP, not the throwaway copy
    assert zip_path.read_bytes() == before


def test_rotate_with_rekey_backups_cli(trek4: TrekCopy, tmp_path: Path) -> None:
    folder = backups_dir(trek4)
    good = build_backup_zip(trek4.db, folder / "backup-1.zip")
    auto = build_backup_zip(trek4.db, folder / "auto-backup-2.zip", streamed=True)
    broken = folder / "backup-3.zip"
    broken.write_bytes(b"PK\x03\x04 broken")
    new_key_file = tmp_path / "new.key"
    create_key_file(new_key_file, NEW.reveal())

    result = CliRunner().invoke(
        main, ["rotate", "--data-dir", str(trek4.data_dir), "--new-key-file", str(new_key_file), "--rekey-backups"],
        catch_exceptions=False,
    )

    assert result.exit_code == 8, result.stderr  # a ZIP was left as it is: as `rekey-backup` does (issue 8 §2)
    assert f"backup {broken} was left as it is" in result.stderr
    assert broken.read_bytes() == b"PK\x03\x04 broken"
    for zip_path in (good, auto):
        restored = extract_db(zip_path, tmp_path / zip_path.stem)
        assert verify_database(restored, [NEW]).ok
    assert verify_database(trek4.db, [NEW]).ok
    assert sorted(p.name for p in find_backups(trek4.data_dir)) == ["auto-backup-2.zip", "backup-1.zip", "backup-3.zip"]


def test_rekey_backup_command_exit_code_names_the_zip_left_alone(trek4: TrekCopy, tmp_path: Path) -> None:
    folder = backups_dir(trek4)
    good = build_backup_zip(trek4.db, folder / "backup-1.zip")
    # A backup taken after an earlier rotation: under a key this run is not given.
    other = copy_fixture("trek-4.2-shape", tmp_path / "other")
    rotate_database(RotateOptions(other.db, (other.key,), Key("an even older key", "x"), None))
    stale = build_backup_zip(other.db, folder / "backup-0.zip")
    stale_bytes = stale.read_bytes()
    os.environ["KEYROTATE_TEST_NEW"] = NEW.reveal()
    try:
        result = CliRunner().invoke(
            main, ["rekey-backup", str(stale), str(good), "--data-dir", str(trek4.data_dir),
                   "--new-key-env", "KEYROTATE_TEST_NEW", "--format", "csv"],
            catch_exceptions=False,
        )
    finally:
        del os.environ["KEYROTATE_TEST_NEW"]
    assert result.exit_code == 8
    rows = result.stdout.splitlines()
    assert rows[0] == "backup,outcome,secrets,reason"
    assert rows[1].startswith(f"{stale},left as it is,0,")
    assert rows[2].startswith(f"{good},rekeyed,{len(trek4.encrypted_entries())},")
    assert stale.read_bytes() == stale_bytes


def test_backups_command_lists_dates_and_verdicts(trek4: TrekCopy, tmp_path: Path) -> None:
    folder = backups_dir(trek4)
    build_backup_zip(trek4.db, folder / "backup-2026-03-14.zip")
    (folder / "auto-backup-2026-03-15.zip").write_bytes(b"not a zip")
    other = tmp_path / "other.key"
    create_key_file(other, NEW.reveal())
    result = CliRunner().invoke(
        main, ["backups", "--data-dir", str(trek4.data_dir), "--key-file", str(other), "--format", "json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    listed = {Path(b["path"]).name: b for b in json.loads(result.stdout)["backups"]}
    assert listed["backup-2026-03-14.zip"]["date"] == "2026-03-14 02:30:00"
    assert [k["opens"] for k in listed["backup-2026-03-14.zip"]["keys"]] == ["none"]
    assert "not a zip" in listed["auto-backup-2026-03-15.zip"]["problem"]

    text = CliRunner().invoke(main, ["backups", "--data-dir", str(trek4.data_dir)], catch_exceptions=False).stdout
    total = len(trek4.encrypted_entries())
    assert f"current key TREK uses from {trek4.data_dir}: all ({total}/{total})" in text


def test_a_rekey_killed_mid_zip_leaves_its_copy_beside_the_zip_and_the_next_run_removes_it(
    trek3: TrekCopy, tmp_path: Path, private_tempdir: Path
) -> None:
    folder = backups_dir(trek3)
    zips = [build_backup_zip(trek3.db, folder / f"backup-{n}.zip") for n in (1, 2, 3)]
    old = trek3.key
    old_key = tmp_path / "old.key"
    create_key_file(old_key, old.reveal())
    new_key = tmp_path / "new.key"
    create_key_file(new_key, NEW.reveal())
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key), "--rekey-backups"]

    # The live database commits first; the 3rd COMMIT is that of backup-2.zip's extracted copy.
    killed = run_keyrotate(args, kill_at="before-commit:3", TMPDIR=str(private_tempdir))

    assert killed.returncode == -9, killed.stderr
    assert list(private_tempdir.iterdir()) == []  # nothing under the old key outside the data directory
    [leftover] = [p for p in folder.iterdir() if p.name not in {z.name for z in zips}]
    assert leftover.name.startswith(".backup-2.zip.keyrotate-extract-") and stat.S_IMODE(leftover.stat().st_mode) == 0o700
    assert verify_database(leftover / "travel.db", [old]).ok  # what was at stake: a copy under the old key
    listed = run_keyrotate(["exposure", "--data-dir", str(trek3.data_dir), "--key-file", str(old_key)])
    assert str(leftover) in listed.stdout and "backup-2.zip" in listed.stdout, listed.stdout + listed.stderr

    rerun = run_keyrotate(args, TMPDIR=str(private_tempdir))

    assert rerun.returncode == 0, rerun.stderr
    assert f"Removed {leftover}: a copy of travel.db under the old key of backup-2.zip" in rerun.stderr
    assert sorted(folder.iterdir()) == zips
    for zip_path in zips:
        assert verify_database(extract_db(zip_path, tmp_path / zip_path.stem), [NEW]).ok


def test_after_rekey_backups_the_restore_advice_puts_the_zips_back_under_the_old_key_too(
    trek3: TrekCopy, tmp_path: Path
) -> None:
    folder = backups_dir(trek3)
    zips = [build_backup_zip(trek3.db, folder / "backup-1.zip"), build_backup_zip(trek3.db, folder / "auto-backup-2.zip")]
    old = trek3.key
    new_key = tmp_path / "new.key"
    create_key_file(new_key, NEW.reveal())

    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key),
                            "--rekey-backups"])

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    restore = lines[lines.index("To restore it and the old key (TREK stopped), run:") + 1].strip()
    note = next(n for n, line in enumerate(lines) if line.startswith("The restore command above puts the database"))
    assert "2 of them are now under the new key" in lines[note] and lines[note].endswith("old key with:")
    command = shlex.split(lines[note + 1])
    assert command[:2] == ["keyrotate", "rekey-backup"]

    subprocess.run(restore, shell=True, check=True)  # the operator restores, as told
    assert verify_database(trek3.db, [old]).ok and trek3.key.reveal() == old.reveal()
    back = run_keyrotate(command[1:])

    assert back.returncode == 0, back.stdout + back.stderr
    for zip_path in zips:
        assert verify_database(extract_db(zip_path, tmp_path / zip_path.stem), [old]).ok
    listing = run_keyrotate(["backups", "--data-dir", str(trek3.data_dir), "--format", "json"])
    assert [b["keys"][0]["opens"] for b in json.loads(listing.stdout)["backups"]] == ["all", "all"]


def test_rekey_output_counts_each_outcome_and_shows_no_blank_reason(trek4: TrekCopy, tmp_path: Path) -> None:
    folder = backups_dir(trek4)
    done = build_backup_zip(trek4.db, folder / "backup-1.zip")
    assert rekey_backup(done, [trek4.key], NEW).outcome == "rekeyed"
    todo = build_backup_zip(trek4.db, folder / "backup-2.zip")
    new_key = tmp_path / "new.key"
    create_key_file(new_key, NEW.reveal())

    result = CliRunner().invoke(main, ["rekey-backup", str(done), str(todo), "--old-key-file",
                                       str(trek4.data_dir / ".encryption_key"), "--new-key-file", str(new_key)],
                                catch_exceptions=False)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Backup ZIPs (1 re-encrypted, 1 already on the new key): 2"
    assert not [line for line in lines if line.strip() == "reason"]
