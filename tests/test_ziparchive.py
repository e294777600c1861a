"""The byte-level ZIP rewrite on archives shaped differently from TREK's usual ones."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from keyrotate.operations.backup_rekey import rekey_backup
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key

from .conftest import TrekCopy
from .ziphelpers import build_zip64_backup, raw_members, snapshot

NEW = Key("the new key for zip layout tests", "new test key")


def test_member_order_stored_database_and_comment_are_kept(trek3: TrekCopy, tmp_path: Path) -> None:
    db_copy = snapshot(trek3.db, tmp_path / "snap.db")
    zip_path = tmp_path / "backup-odd.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.comment = b"made by a hand-rolled script"
        archive.writestr("uploads/first.txt", b"first " * 50, compress_type=zipfile.ZIP_DEFLATED)
        archive.write(db_copy, "travel.db", compress_type=zipfile.ZIP_STORED)
        archive.writestr("uploads/last.bin", bytes(range(256)), compress_type=zipfile.ZIP_STORED)
    before = raw_members(zip_path)

    assert rekey_backup(zip_path, [trek3.key], NEW).outcome == "rekeyed"

    after = raw_members(zip_path)
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.comment == b"made by a hand-rolled script"
        assert archive.namelist() == ["uploads/first.txt", "travel.db", "uploads/last.bin"]
        assert archive.getinfo("travel.db").compress_type == zipfile.ZIP_STORED
        archive.extract("travel.db", tmp_path / "restored")
    assert after["uploads/first.txt"] == before["uploads/first.txt"]
    assert after["uploads/last.bin"] == before["uploads/last.bin"]
    assert verify_database(tmp_path / "restored" / "travel.db", [NEW]).ok


def test_zip64_member_is_refused_and_left_alone(trek3: TrekCopy, tmp_path: Path) -> None:
    zip_path = tmp_path / "backup-64.zip"
    before = build_zip64_backup(trek3.db, zip_path)
    result = rekey_backup(zip_path, [trek3.key], NEW)
    assert result.outcome == "left as it is" and "ZIP64" in result.reason
    assert zip_path.read_bytes() == before


@pytest.mark.parametrize("members", [["uploads/a.txt"], ["travel.db", "travel.db-wal"]])
def test_zip_without_a_single_self_contained_database_is_left_alone(
    trek3: TrekCopy, tmp_path: Path, members: list[str]
) -> None:
    zip_path = tmp_path / "backup-x.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name in members:
            archive.writestr(name, trek3.db.read_bytes() if name == "travel.db" else b"x")
    before = zip_path.read_bytes()
    result = rekey_backup(zip_path, [trek3.key], NEW)
    assert result.outcome == "left as it is"
    assert zip_path.read_bytes() == before
