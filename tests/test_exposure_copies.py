"""What a stolen data directory holds beside the database, through the real CLI: copies found by their SQLite
header whatever their name, each checked with the suspected key; files holding that key; other keys stolen with
the directory and what they open."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.operations.exposure_files import files_beside
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key

from .conftest import TrekCopy
from .ziphelpers import build_backup_zip, snapshot

OTHER = "another-key-never-this-databases-0123456789"
UNRELATED = "a-key-that-opens-nothing-here-0123456789"


def exposure(data_dir: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["exposure", "--data-dir", str(data_dir), "--format", "json", *extra],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def copies_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["path"]: c for c in document["copies"]}


def rotate_copy(path: Path, key: Key, new_text: str, tmp_path: Path) -> None:
    """Put a copy of the database under another key, with keyrotate itself."""
    old, new = tmp_path / "copy-old.key", tmp_path / "copy-new.key"
    old.write_text(key.reveal())
    new.write_text(new_text)
    for f in (old, new):
        f.chmod(0o600)
    result = CliRunner().invoke(main, ["rotate", "--db", str(path), "--old-key-file", str(old), "--new-key-file",
                                       str(new), "--no-backup", "--yes", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr


def test_copies_are_found_by_their_header_and_checked_with_the_suspected_key(trek4: TrekCopy, tmp_path: Path) -> None:
    data = trek4.data_dir
    (data / "backups").mkdir()
    (data / "uploads").mkdir()
    whole = snapshot(trek4.db, data / "travel.db.bak")
    dated = snapshot(trek4.db, data / "backups" / "travel-2026-02-01.db")
    partly = snapshot(trek4.db, data / "old-copy")  # no telling name at all
    with closing(sqlite3.connect(partly)) as conn, conn:
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id = 2",
                     (Cipher(Key(OTHER, "x"), Scheme.API).seal(b"whatever"),))
    other = snapshot(trek4.db, data / "travel.db.backup-1700000000000")
    rotate_copy(other, trek4.key, OTHER, tmp_path)  # a copy the suspected key does not open: not listed
    snapshot(trek4.db, data / "uploads" / "deep.db")  # only the directory and backups/ are looked at
    outside = snapshot(trek4.db, tmp_path / "elsewhere.db")
    (data / "backups" / "link.db").symlink_to(outside)  # a link: the thief got the link, not the file
    with closing(sqlite3.connect(data / "notes.sqlite")) as conn, conn:
        conn.execute("CREATE TABLE notes (body TEXT)")  # another program's database: not a copy
    (data / ".encryption_key.old").write_text(trek4.key.reveal() + "\n")
    (data / "trek.env").write_text(f"TZ=UTC\nENCRYPTION_KEY={trek4.key.reveal()}\n")
    (data / "unrelated.key").write_text(UNRELATED + "\n")  # a key, but one that opens nothing here
    before = {p: p.read_bytes() for p in (whole, dated, partly, other)}

    document = exposure(data)

    copies = copies_of(document)
    assert set(copies) == {str(p) for p in (whole, dated, partly, data / ".encryption_key.old", data / "trek.env")}
    n = len(trek4.encrypted_entries())
    for path in (whole, dated):
        assert f"the suspected key opens all {n} of its secrets" in copies[str(path)]["note"]
    assert f"the suspected key opens {n - 1} of its {n} secrets" in copies[str(partly)]["note"]
    assert copies[str(dated)]["kind"] == "copy of the database in backups/"
    assert copies[str(data / "trek.env")]["kind"] == "file holding the suspected key"
    assert all(before[p] == p.read_bytes() for p in before)  # read-only
    text = CliRunner().invoke(main, ["exposure", "--data-dir", str(data)], catch_exceptions=False).stdout
    assert f"NOT FIXED BY ROTATING: {whole} (copy of the database)" in text
    assert trek4.key.reveal() not in text and OTHER not in text and UNRELATED not in text
    found = repr(files_beside(trek4.db))  # what a traceback would show of the files read
    assert "trek.env" in found and trek4.key.reveal() not in found and UNRELATED not in found


def test_a_copy_that_cannot_be_read_is_listed_as_assumed_open(trek4: TrekCopy) -> None:
    damaged = trek4.data_dir / "travel.db.bak"
    damaged.write_bytes(trek4.db.read_bytes()[:4096] + b"\xff" * 8192)  # SQLite's header, then garbage
    note = copies_of(exposure(trek4.data_dir))[str(damaged)]["note"]
    assert note.startswith("could not be checked (") and "assume it opens with the suspected key" in note
    assert "Restore it from a backup" not in note  # travel.db's advice, not a copy's


def test_keys_stolen_with_the_directory_are_tried_and_named(trek4: TrekCopy, tmp_path: Path) -> None:
    """A planned rotation A -> B without --rekey-backups saved A beside its backup; B and the directory leak:
    A opens the old ZIP and the backup, and the checklist says which key file does."""
    data = trek4.data_dir
    (data / "backups").mkdir()
    old_zip = build_backup_zip(trek4.db, data / "backups" / "backup-2026-03-01T02-00-00.zip")
    old_key = trek4.key
    new = tmp_path / "B.key"
    new.write_text("B" * 64)
    new.chmod(0o600)
    rotated = CliRunner().invoke(main, ["rotate", "--data-dir", str(data), "--new-key-file", str(new), "--yes", "-q"],
                                 catch_exceptions=False)
    assert rotated.exit_code == 0, rotated.stderr
    backup = next(p for p in data.glob("travel.db.keyrotate-backup-*") if p.suffix != ".key")
    saved = Path(f"{backup}.key")
    assert saved.read_text() == old_key.reveal()

    copies = copies_of(exposure(data))  # the suspected key: B, from .encryption_key

    n = len(trek4.encrypted_entries())
    source = f"key in {saved}"
    for path in (old_zip, backup):
        assert copies[str(path)]["opened_by"] == [source]
        note = copies[str(path)]["note"]
        assert f"the {source} (in the directory: a copy of it carries this key too) opens all {n} of its secrets" in note
    key_line = copies[str(saved)]
    assert key_line["kind"] == "another key in the directory"
    assert old_zip.name in key_line["note"] and backup.name in key_line["note"]
    text = CliRunner().invoke(main, ["exposure", "--data-dir", str(data)], catch_exceptions=False).stdout
    assert old_key.reveal() not in text and "B" * 64 not in text


def test_an_old_session_secret_that_was_the_key_is_tried(trek4: TrekCopy, tmp_path: Path) -> None:
    """An install that once encrypted with .jwt_secret keeps it after TREK copied it to .encryption_key: once
    the key is rotated, .jwt_secret still opens every ZIP made before."""
    data = trek4.data_dir
    (data / ".jwt_secret").write_text(trek4.key.reveal() + "\n")
    (data / "backups").mkdir()
    old_zip = build_backup_zip(trek4.db, data / "backups" / "auto-backup-2026-03-02T02-00-00.zip")
    shutil.copy(data / ".encryption_key", tmp_path / "A.key")
    new = tmp_path / "B.key"
    new.write_text("C" * 64)
    new.chmod(0o600)
    rotated = CliRunner().invoke(main, ["rotate", "--data-dir", str(data), "--new-key-file", str(new), "--yes", "-q",
                                        "--no-backup", "--discard-old-key"], catch_exceptions=False)
    assert rotated.exit_code == 0, rotated.stderr
    assert not list(data.glob("*.keyrotate-*"))

    copies = copies_of(exposure(data))

    assert copies[str(old_zip)]["opened_by"] == [f"key in {data / '.jwt_secret'}"]
    assert old_zip.name in copies[str(data / ".jwt_secret")]["note"]
    os.remove(data / ".jwt_secret")
    assert str(old_zip) not in copies_of(exposure(data))  # nothing else here opens it


def test_rotate_incident_json_carries_the_copies_of_the_text_checklist(trek4: TrekCopy, tmp_path: Path) -> None:
    bak = snapshot(trek4.db, trek4.data_dir / "travel.db.bak")
    base = ["rotate", "--data-dir", str(trek4.data_dir), "--generate-new-key", "--incident"]
    as_json = CliRunner().invoke(main, [*base, "--new-key-out", str(tmp_path / "new.key"), "--json"],
                                 catch_exceptions=False)
    assert as_json.exit_code == 0, as_json.stderr
    copies = copies_of(json.loads(as_json.stdout)["exposure"])
    backup = next(p for p in trek4.data_dir.glob("travel.db.keyrotate-backup-*") if p.suffix != ".key")
    assert set(copies) == {str(bak), str(backup)}
    assert copies[str(bak)]["opened_by"] and "saved beside it in" in copies[str(backup)]["note"]
    # The text checklist of the same situation lists the same copies.
    shutil.copy(backup, trek4.db)  # back under the leaked key, as before the rotation
    for side in ("-wal", "-shm"):
        Path(f"{trek4.db}{side}").unlink(missing_ok=True)
    Path(f"{backup}.key").rename(trek4.data_dir / ".encryption_key")
    backup.unlink()
    as_text = CliRunner().invoke(main, [*base, "--new-key-out", str(tmp_path / "newer.key")], catch_exceptions=False)
    assert as_text.exit_code == 0, as_text.stderr
    listed = {line.split(" (")[0].removeprefix("NOT FIXED BY ROTATING: ") for line in as_text.stdout.splitlines()
              if line.startswith("NOT FIXED BY ROTATING: ")}
    again = next(p for p in trek4.data_dir.glob("travel.db.keyrotate-backup-*") if p.suffix != ".key")
    assert listed == {str(bak), str(again)}


def test_values_of_the_database_under_another_key_found_beside_it(trek4: TrekCopy) -> None:
    """A database left under two keys (TREK's script commits past failures): the other key, kept in the
    directory, opens the values the suspected key does not."""
    with closing(sqlite3.connect(trek4.db)) as conn, conn:
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id IN (2, 3)",
                     (Cipher(Key(OTHER, "x"), Scheme.API).seal(b"whatever"),))
    (trek4.data_dir / ".encryption_key.old").write_text(OTHER + "\n")
    document = exposure(trek4.data_dir)
    assert document["totals"]["not_opened"] == 2
    here = copies_of(document)[str(trek4.db)]
    assert here["opened_by"] == [f"key in {trek4.data_dir / '.encryption_key.old'}"]
    assert f"opens 2 of its {len(trek4.encrypted_entries())} secrets" in here["note"]
    command = here["note"].split("whose they are: `")[1].split("`")[0]  # run as printed: it names the two users
    listed = CliRunner().invoke(main, [*shlex.split(command)[1:], "--format", "json"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.stderr
    assert sorted(s["owner_id"] for s in json.loads(listed.stdout)["secrets"]) == [2, 3]
    (trek4.data_dir / ".encryption_key.old").unlink()
    assert str(trek4.db) not in copies_of(exposure(trek4.data_dir))


def test_a_file_this_user_may_not_read_is_named_not_skipped(trek4: TrekCopy, monkeypatch: Any) -> None:
    """Run as a user who may not read a copy (or backups/ itself), exposure listed nothing for it and exited 0:
    the copy a thief with the files does read went unmentioned. Simulated from the test side (the suite may run
    as root, who reads any file): opening that one copy says EACCES, as it does for another user."""
    from keyrotate.operations import exposure_files

    locked = trek4.data_dir / "travel.db.bak"
    shutil.copyfile(trek4.db, locked)
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(exposure_files.os, "open", refusing_open)
    copies = copies_of(exposure(trek4.data_dir))
    assert copies[str(locked)]["kind"] == "not readable by this user"
    assert "run exposure as its owner or root" in copies[str(locked)]["note"]


def test_a_json_report_that_fails_part_way_is_closed_as_incomplete(trek4: TrekCopy) -> None:
    """A value that stops the pass (not UTF-8: exit 4) after records were written left a JSON document cut inside
    "secrets"; it now ends with "complete": false and the error, as an interrupted one does."""
    canary = b"AIza-late-NOT-UTF8-CANARY"
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("UPDATE trek_photos SET passphrase = CAST(? AS TEXT) WHERE id = (SELECT max(id) FROM trek_photos)",
                     (canary + b"\xff",))
        conn.commit()
    result = CliRunner().invoke(main, ["exposure", "--data-dir", str(trek4.data_dir), "--format", "json",
                                       "--no-copies"], catch_exceptions=False)
    assert result.exit_code == 4, result.stderr
    document = json.loads(result.stdout)
    assert document["complete"] is False and document["error"]["exit_code"] == 4 and document["secrets"]
    assert "INCOMPLETE" in result.stderr and canary.decode() not in result.stdout + result.stderr


def test_a_copy_named_with_control_characters_is_printed_escaped(trek4: TrekCopy) -> None:
    """The "Checking copy i of n" line printed file names from the data directory as they are: a newline in a
    name could forge a line of the checklist on a terminal."""
    shutil.copyfile(trek4.db, trek4.data_dir / "travel.db.bak\n[x] all clear")
    result = CliRunner().invoke(main, ["exposure", "--data-dir", str(trek4.data_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "travel.db.bak\\n[x] all clear" in result.stderr
    assert not any(line.startswith("[x] all clear") for line in result.stderr.splitlines())


def test_a_copy_with_its_own_wal_is_listed_with_it(trek4: TrekCopy, tmp_path: Path) -> None:
    """The checklist said to delete travel.db.bak, not travel.db.bak-wal beside it: deleted as told, the -wal
    still held values the leaked key opens."""
    work = tmp_path / "w.db"
    shutil.copyfile(trek4.db, work)
    writer = sqlite3.connect(work)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE users SET maps_api_key = ? WHERE id = 5",
                   (Cipher(trek4.key, Scheme.API).seal(b"only in the copy's wal"),))
    writer.commit()
    bak = trek4.data_dir / "travel.db.bak"
    shutil.copyfile(work, bak)
    shutil.copyfile(f"{work}-wal", f"{bak}-wal")  # as copied while its writer was still running
    writer.close()
    copy = copies_of(exposure(trek4.data_dir))[str(bak)]
    assert "Delete travel.db.bak-wal" in copy["note"]
    assert Path(f"{bak}-wal").stat().st_size > 0  # read, not folded into the copy
