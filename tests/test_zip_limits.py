"""Backup ZIPs keyrotate must not unpack (bombs, too big for the disk) or cannot rewrite (ZIP64): refused up
front, left byte for byte as they are, and a dry run says the same as the real run."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keyrotate.cli.app import main
from keyrotate.errors import ExitCode
from keyrotate.operations import backup_extract
from keyrotate.trek.keys import create_key_file, generate_key_text

from .conftest import TrekCopy
from .ziphelpers import build_backup_zip, build_zip64_backup, snapshot

BOMB_ZEROS = 50 << 20  # deflates to about 50 KB: a 1,000:1 ratio


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """keyrotate's temporary directories land here, so the test can see what is left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def make_bomb(trek: TrekCopy, zip_path: Path) -> Path:
    """A backup whose travel.db is the real database followed by 50 MB of zeros."""
    db = snapshot(trek.db, zip_path.with_suffix(".db")).read_bytes()
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("travel.db", db + bytes(BOMB_ZEROS))
        archive.writestr("uploads/a.txt", b"a")
    return zip_path


def rekey(zip_path: Path, trek: TrekCopy, tmp_path: Path, *extra: str) -> Result:
    new = tmp_path / "new.key"
    if not new.exists():
        create_key_file(new, generate_key_text())
    return CliRunner().invoke(main, ["rekey-backup", str(zip_path), "--old-key-file",
                                     str(trek.data_dir / ".encryption_key"), "--new-key-file", str(new), *extra],
                              catch_exceptions=False)


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_member_beyond_a_sane_ratio_is_refused_and_nothing_is_extracted(
    trek3: TrekCopy, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    monkeypatch.setattr(backup_extract, "RATIO_FLOOR", 1 << 20)  # so a 50 MB bomb is enough to show it
    zip_path = make_bomb(trek3, tmp_path / "backup-bomb.zip")
    before = zip_path.read_bytes()

    result = rekey(zip_path, trek3, tmp_path, *(["--dry-run"] if dry_run else []))

    assert result.exit_code == ExitCode.UNDECRYPTABLE, result.output
    assert "left as it is" in result.stdout and "would inflate" in result.stdout
    assert "not a database TREK wrote" in result.stdout
    assert zip_path.read_bytes() == before
    assert list(private_tmp.iterdir()) == []


def test_a_member_larger_than_the_free_space_is_refused(
    trek3: TrekCopy, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup_extract, "MAX_RATIO", 10**6)  # only the free space decides here
    # As if the disk were full: a margin as large as the free space plus 1 TiB. (Leaving "10 MB free" made the
    # test flaky: other processes freeing 40 MB of the shared disk between the two readings let the member fit.)
    free = shutil.disk_usage(private_tmp).free
    monkeypatch.setattr(backup_extract, "FREE_SPACE_MARGIN", free + (1 << 40))
    zip_path = make_bomb(trek3, tmp_path / "backup-big.zip")
    before = zip_path.read_bytes()

    result = rekey(zip_path, trek3, tmp_path)

    assert result.exit_code == ExitCode.UNDECRYPTABLE, result.output
    assert f"{tmp_path} needs that plus" in result.stdout  # the ZIP's own disk, with the room kept free named
    assert "MiB kept free for the database beside it" in result.stdout and "run the same command again" in result.stdout
    assert zip_path.read_bytes() == before
    assert list(private_tmp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup-big.db", "backup-big.zip", "new.key", "tmp", "trek-3.0.15"]


def test_the_copy_stops_at_the_cap_whatever_the_header_said() -> None:
    out = io.BytesIO()
    with pytest.raises(backup_extract.TooLarge, match="beyond what its header claims"):
        backup_extract._copy_capped(io.BytesIO(bytes(3 << 20)), out, 2 << 20)
    assert len(out.getvalue()) <= 2 << 20


def test_backups_listing_reports_a_bomb_instead_of_unpacking_it(
    trek3: TrekCopy, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup_extract, "RATIO_FLOOR", 1 << 20)
    (trek3.data_dir / "backups").mkdir()
    make_bomb(trek3, trek3.data_dir / "backups" / "backup-2026-01-01.zip")
    result = CliRunner().invoke(main, ["backups", "--data-dir", str(trek3.data_dir)], catch_exceptions=False)
    assert result.exit_code == 0
    assert "cannot be checked" in result.stdout and "would inflate" in result.stdout
    assert list(private_tmp.iterdir()) == []


def test_dry_run_reports_a_zip64_member_as_the_real_run_leaves_it(trek3: TrekCopy, tmp_path: Path) -> None:
    zip_path = tmp_path / "backup-64.zip"
    before = build_zip64_backup(trek3.db, zip_path)

    dry = rekey(zip_path, trek3, tmp_path, "--dry-run")
    real = rekey(zip_path, trek3, tmp_path)

    for result in (dry, real):
        assert result.exit_code == ExitCode.UNDECRYPTABLE, result.output
        assert "left as it is" in result.stdout and "ZIP64" in result.stdout
        assert "would be rekeyed" not in result.stdout
    assert zip_path.read_bytes() == before


def test_no_inode_left_for_the_extracted_copy_leaves_the_zip_as_it_is(trek3: TrekCopy, tmp_path: Path) -> None:
    """Out of inodes beside the ZIP (its directory made, the copy not): a bare "Cannot create ..." with exit 11,
    which after rotate's COMMIT said nothing of the rotated database or the ZIPs left."""
    backups = tmp_path / "backups"
    backups.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m,nr_inodes=3", "tmpfs", str(backups)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        zip_path = backups / "backup-2026-03-14.zip"
        zip_path.write_bytes(build_backup_zip(trek3.db, tmp_path / "built.zip").read_bytes())  # inode 2 of 3
        before = zip_path.read_bytes()
        result = rekey(zip_path, trek3, tmp_path)
        assert result.exit_code == ExitCode.UNDECRYPTABLE, result.output
        assert "left as it is" in result.stdout and "cannot be extracted beside it" in result.stdout
        assert "run the same command again" in result.stdout
        assert zip_path.read_bytes() == before and [p.name for p in backups.iterdir()] == [zip_path.name]
    finally:
        subprocess.run(["umount", str(backups)], capture_output=True, check=False)
