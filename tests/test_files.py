"""Every file keyrotate creates: exclusive, never through a planted link, 0600, owner kept."""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keyrotate.errors import CannotWriteError
from keyrotate.rotation.verify import verify_database
from keyrotate.store.files import replacing, write_new_file

from .conftest import TrekCopy
from .test_lifecycle import fingerprint, run_keyrotate
from .ziphelpers import build_backup_zip

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def plant_links(at: Path, victim_dir: Path) -> tuple[Path, Path]:
    """A dangling link and a link to an existing file; returns (dangling target, existing target)."""
    missing = victim_dir / f"{at.name}-dangling-target"
    existing = victim_dir / f"{at.name}-existing-target"
    existing.write_text("precious\n")
    return missing, existing


@pytest.mark.parametrize("kind", ["dangling", "existing"])
def test_new_file_never_follows_a_link(tmp_path: Path, kind: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    missing, existing = plant_links(tmp_path / "new", victim)
    (tmp_path / "new").symlink_to(missing if kind == "dangling" else existing)

    with pytest.raises(CannotWriteError, match="symbolic link"):
        write_new_file(tmp_path / "new", b"secret")

    assert not missing.exists()
    assert existing.read_text() == "precious\n"


@pytest.mark.parametrize("kind", ["dangling", "existing", "directory"])
def test_replacing_refuses_a_link_or_directory_at_the_target(tmp_path: Path, kind: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    missing, existing = plant_links(tmp_path / "target", victim)
    target = tmp_path / "target"
    if kind == "directory":
        target.mkdir()
    else:
        target.symlink_to(missing if kind == "dangling" else existing)

    with pytest.raises(CannotWriteError), replacing(target) as (_partial, handle):
        handle.write(b"secret")

    assert not missing.exists()
    assert existing.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target", "victim"]  # no temporary file left


@pytest.mark.parametrize("mode", [0o640, 0o600, 0o644, 0o400])
def test_replacing_swaps_a_regular_file_keeping_its_mode(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "target"
    target.write_text("old")
    target.chmod(mode)
    with replacing(target) as (partial, handle):
        handle.write(b"new")
        assert stat.S_IMODE(partial.stat().st_mode) == 0o600  # while the data is written
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["target"]


def test_replacing_a_missing_file_makes_it_0600(tmp_path: Path) -> None:
    with replacing(tmp_path / "target") as (_partial, handle):
        handle.write(b"new")
    assert stat.S_IMODE((tmp_path / "target").stat().st_mode) == 0o600


@root_only
def test_new_file_takes_the_owner_of_its_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_text("x")
    os.chown(model, 1234, 1235)
    write_new_file(tmp_path / "new", b"key", owner_like=model)
    info = (tmp_path / "new").stat()
    assert (info.st_uid, info.st_gid) == (1234, 1235)


def test_rotate_never_writes_the_backup_through_a_link_at_the_default_name(
    trek3: TrekCopy, new_key_file: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    now = datetime.now(UTC)
    # The default backup name holds the second the run starts: plant a dangling link at each of the next few.
    targets = []
    for offset in range(-1, 6):
        stamp = (now + timedelta(seconds=offset)).strftime("%Y%m%dT%H%M%SZ")
        target = victim / f"copy-{offset}"
        targets.append(target)
        (trek3.data_dir / f"travel.db.keyrotate-backup-{stamp}").symlink_to(target)

    old_key = trek3.key
    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)])

    assert result.returncode == 0, result.stderr
    assert not any(t.exists() for t in targets)
    assert list(victim.iterdir()) == []
    backups = [p for p in trek3.data_dir.iterdir()
               if ".keyrotate-backup-" in p.name and not p.is_symlink() and p.suffix != ".key"]
    assert len(backups) == 1 and backups[0].stat().st_nlink == 1
    assert verify_database(backups[0], [old_key]).ok


@pytest.mark.parametrize("kind", ["dangling", "existing"])
def test_rotate_refuses_an_explicit_backup_path_that_is_a_link(
    trek3: TrekCopy, new_key_file: Path, tmp_path: Path, kind: str
) -> None:
    missing, existing = plant_links(tmp_path / "backup", tmp_path)
    link = tmp_path / "backup"
    link.symlink_to(missing if kind == "dangling" else existing)
    before = fingerprint(trek3.data_dir)

    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file),
                            "--backup", str(link)])

    assert result.returncode == 11, result.stderr
    assert "symbolic link" in result.stderr
    assert not missing.exists() and existing.read_text() == "precious\n"
    assert fingerprint(trek3.data_dir) == before


@pytest.mark.parametrize("kind", ["dangling", "existing"])
def test_rotate_refuses_a_key_file_that_is_a_link_before_writing_anything(
    trek3: TrekCopy, new_key_file: Path, tmp_path: Path, kind: str
) -> None:
    key_text = (trek3.data_dir / ".encryption_key").read_text()
    missing, existing = plant_links(tmp_path / "key", tmp_path)
    existing.write_text(key_text)
    (trek3.data_dir / ".encryption_key").unlink()
    (trek3.data_dir / ".encryption_key").symlink_to(missing if kind == "dangling" else existing)
    old = tmp_path / "old.key"
    old.write_text(key_text)
    before = fingerprint(trek3.data_dir)

    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--old-key-file", str(old),
                            "--new-key-file", str(new_key_file)])

    assert result.returncode == 11, result.stderr
    assert "symbolic link" in result.stderr
    assert not missing.exists() and existing.read_text() == key_text
    assert fingerprint(trek3.data_dir) == before


def test_a_link_planted_at_a_temporary_name_is_removed_not_followed(
    trek3: TrekCopy, new_key_file: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    planted = [trek3.data_dir / "..encryption_key.keyrotate-abc.partial",
               trek3.data_dir / ".travel.db.keyrotate-backup.keyrotate-abc.partial"]
    for n, link in enumerate(planted):
        link.symlink_to(victim / f"t{n}")

    result = run_keyrotate(["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)])

    assert result.returncode == 0, result.stderr
    assert list(victim.iterdir()) == []
    assert not any(os.path.lexists(p) for p in planted)


@pytest.mark.parametrize("kind", ["dangling", "existing"])
def test_generate_key_refuses_a_link_at_out(tmp_path: Path, kind: str) -> None:
    missing, existing = plant_links(tmp_path / "new.key", tmp_path)
    (tmp_path / "new.key").symlink_to(missing if kind == "dangling" else existing)

    result = run_keyrotate(["generate-key", "--out", str(tmp_path / "new.key")])

    assert result.returncode == 11, result.stderr
    assert "symbolic link" in result.stderr
    assert not missing.exists() and existing.read_text() == "precious\n"


def test_rekey_backup_leaves_a_linked_zip_and_its_target_alone(trek3: TrekCopy, new_key_file: Path,
                                                               tmp_path: Path) -> None:
    outside = build_backup_zip(trek3.db, tmp_path / "outside.zip")
    before = outside.read_bytes()
    folder = trek3.data_dir / "backups"
    folder.mkdir()
    (folder / "backup-1.zip").symlink_to(outside)

    result = run_keyrotate(["rekey-backup", str(folder / "backup-1.zip"), "--data-dir", str(trek3.data_dir),
                            "--new-key-file", str(new_key_file)])

    assert result.returncode == 8, result.stdout + result.stderr
    assert "symbolic link" in result.stdout
    assert outside.read_bytes() == before
    assert (folder / "backup-1.zip").is_symlink()


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


TREK_GROUP = 1235  # TREK's user reads its key through this group: root:nogroup 0640 on a real install


@root_only
def test_files_keyrotate_replaces_keep_owner_group_and_mode_those_it_creates_are_0600(
    trek3: TrekCopy, new_key_file: Path
) -> None:
    data = trek3.data_dir
    folder = data / "backups"
    folder.mkdir()
    zips = [build_backup_zip(trek3.db, folder / "backup-1.zip"), build_backup_zip(trek3.db, folder / "auto-backup-2.zip")]
    for path in (data / ".encryption_key", data / ".jwt_secret"):
        os.chown(path, 0, TREK_GROUP)
        path.chmod(0o640)
    for path in zips:
        os.chown(path, 1234, TREK_GROUP)
        path.chmod(0o640)
    before = set(data.iterdir())

    result = run_keyrotate(["rotate", "--data-dir", str(data), "--new-key-file", str(new_key_file),
                            "--rotate-jwt-secret", "--rekey-backups"])

    assert result.returncode == 0, result.stderr
    assert owner_and_mode(data / ".encryption_key") == (0, TREK_GROUP, 0o640)
    assert owner_and_mode(data / ".jwt_secret") == (0, TREK_GROUP, 0o640)
    assert ".encryption_key (mode 0640)" in result.stderr
    for path in zips:
        assert owner_and_mode(path) == (1234, TREK_GROUP, 0o640)
    created = set(data.iterdir()) - before  # the backup, the old key and the old .jwt_secret beside it
    assert len(created) == 3
    for path in created:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert verify_database(trek3.db, [trek3.key]).ok


@root_only
def test_encryption_key_split_from_jwt_secret_is_readable_as_jwt_secret_was(trek3: TrekCopy) -> None:
    """The .jwt_secret fallback: the .encryption_key written first must be one TREK's user can read."""
    data = trek3.data_dir
    jwt = data / ".jwt_secret"
    jwt.write_text((data / ".encryption_key").read_text())
    (data / ".encryption_key").unlink()
    os.chown(jwt, 0, TREK_GROUP)
    jwt.chmod(0o640)

    result = run_keyrotate(["rotate-jwt-secret", "--data-dir", str(data)])

    assert result.returncode == 0, result.stderr
    assert owner_and_mode(data / ".encryption_key") == (0, TREK_GROUP, 0o640)
    assert owner_and_mode(jwt) == (0, TREK_GROUP, 0o640)
    saved = next(data.glob(".jwt_secret.keyrotate-old-*"))
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600


def test_the_advice_for_a_linked_key_file_works_when_followed(trek3: TrekCopy, new_key_file: Path,
                                                              tmp_path: Path) -> None:
    """It used to say "or remove it": without .encryption_key TREK (and keyrotate) fall back to .jwt_secret, a
    wrong key (exit 7). The printed command, run as printed, makes the link a file and the rerun rotates."""
    key_text = (trek3.data_dir / ".encryption_key").read_text()
    target = tmp_path / "elsewhere.key"
    target.write_text(key_text)
    (trek3.data_dir / ".encryption_key").unlink()
    (trek3.data_dir / ".encryption_key").symlink_to(target)
    args = ["rotate", "--data-dir", str(trek3.data_dir), "--new-key-file", str(new_key_file)]
    refused = run_keyrotate(args)
    assert refused.returncode == 11, refused.stderr
    assert "or remove it" not in refused.stderr
    command = refused.stderr.split("holding what it points to (", 1)[1].rsplit(") and run again", 1)[0]
    subprocess.run(["sh", "-c", command], check=True)
    assert not (trek3.data_dir / ".encryption_key").is_symlink()
    assert (trek3.data_dir / ".encryption_key").read_text() == key_text
    rerun = run_keyrotate(args)
    assert rerun.returncode == 0, rerun.stderr
