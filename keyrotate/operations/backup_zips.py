"""TREK's own backup ZIPs (``data/backups/backup-*.zip``, ``auto-backup-*.zip``).

Each holds a ``travel.db`` whose secrets are under the key of the day it was
made. Listing extracts that database into a private temporary directory and
asks which keys open it; rekeying runs the same :func:`rotate_database` as the
live database on that copy, then swaps it into a new ZIP in which every other
member is byte-identical, and renames the new ZIP over the old one. The
extracted copies are deleted before returning, whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from keyrotate.errors import KeyrotateError, WrongKeyError
from keyrotate.rotation.engine import RotateOptions, rotate_database, verify_database
from keyrotate.rotation.report import SCHEMA_VERSION
from keyrotate.store.files import new_file, replacing
from keyrotate.store.ziparchive import ZipLayoutError, check_replaceable, read_layout, replace_member
from keyrotate.trek.keys import Key

BACKUP_GLOBS = ("backup-*.zip", "auto-backup-*.zip")
DB_MEMBER = "travel.db"
_SIDE_FILES = ("travel.db-wal", "travel.db-journal")


def find_backups(data_dir: Path) -> list[Path]:
    """TREK's backup ZIPs in ``data_dir/backups``, oldest name first."""
    folder = data_dir / "backups"
    if not folder.is_dir():
        return []
    found = {p for pattern in BACKUP_GLOBS for p in folder.glob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: p.name)


@dataclass(frozen=True)
class KeyVerdict:
    key_source: str
    opens: str  # "all" | "some" | "none" | "no secrets"
    opened: int
    total: int


@dataclass(frozen=True)
class BackupStatus:
    path: str
    date: str  # timestamp of travel.db inside the ZIP (the backup's time, TREK's local clock)
    size: int
    keys: tuple[KeyVerdict, ...] = ()
    problem: str | None = None  # set when the ZIP or its database cannot be read

    @property
    def opens_with_first_key(self) -> bool:
        return bool(self.keys) and self.keys[0].opens in ("all", "no secrets")


@dataclass(frozen=True)
class RekeyResult:
    path: str
    outcome: str  # "rekeyed" | "already on the new key" | "left as it is" | "would be rekeyed"
    reason: str = ""
    rotated: int = 0

    @property
    def left_alone(self) -> bool:
        return self.outcome == "left as it is"


class _Unusable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def _extracted_database(zip_path: Path) -> Iterator[tuple[Path, zipfile.ZipInfo]]:
    """``travel.db`` from the ZIP in a fresh 0700 directory, removed on exit.

    The whole archive is CRC-checked first: a ZIP with a damaged member is not
    one keyrotate rewrites.
    """
    workdir = Path(tempfile.mkdtemp(prefix="keyrotate-zip-"))
    try:
        os.chmod(workdir, 0o700)
        try:
            with zipfile.ZipFile(zip_path) as archive:
                names = archive.namelist()
                if names.count(DB_MEMBER) != 1:
                    raise _Unusable(f"holds {names.count(DB_MEMBER)} '{DB_MEMBER}' members at its top level, not 1")
                side = [n for n in _SIDE_FILES if n in names]
                if side:
                    raise _Unusable(f"also holds {', '.join(side)}; keyrotate only rewrites a self-contained travel.db")
                info = archive.getinfo(DB_MEMBER)
                cap = _extraction_cap(info, workdir)  # before the CRC check, which inflates every member
                bad = archive.testzip()
                if bad is not None:
                    raise _Unusable(f"member {bad!r} fails its CRC check (damaged ZIP)")
                target = workdir / DB_MEMBER
                with new_file(target) as out, archive.open(info) as member:
                    _copy_capped(member, out, cap)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError, zlib.error) as exc:
            raise _Unusable(f"cannot be read as a ZIP ({exc})") from None
        except OSError as exc:
            raise _Unusable(f"cannot be read ({exc.strerror or exc})") from None
        yield target, info
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# A travel.db deflates 3 to 10 times; a member claiming far more is a bomb (or a file of empty pages), and it is
# extracted to the temporary directory, which is often a small tmpfs. Below RATIO_FLOOR the ratio is not checked.
MAX_RATIO = 100
RATIO_FLOOR = 256 << 20
FREE_SPACE_MARGIN = 64 << 20  # left free for the rotation's journal and the rest of the system


class _TooLarge(_Unusable):
    pass


def _extraction_cap(info: zipfile.ZipInfo, workdir: Path) -> int:
    """The most bytes travel.db may inflate to; refuses before writing anything if its header claims more."""
    free = shutil.disk_usage(workdir).free - FREE_SPACE_MARGIN
    by_ratio = max(RATIO_FLOOR, info.compress_size * MAX_RATIO)
    if info.file_size > free:
        raise _TooLarge(f"{DB_MEMBER} would inflate to {info.file_size} bytes, more than the {max(free, 0)} free in "
                        f"{workdir.parent} (set TMPDIR to a larger disk)")
    if info.file_size > by_ratio:
        raise _TooLarge(f"{DB_MEMBER} would inflate {info.file_size // max(info.compress_size, 1)} times "
                        f"({info.compress_size} to {info.file_size} bytes): not a database TREK wrote")
    return min(free, by_ratio)


def _copy_capped(member: IO[bytes], out: IO[bytes], cap: int) -> None:
    """Copy, stopping at ``cap`` bytes whatever the ZIP's header said."""
    written = 0
    while chunk := member.read(1 << 20):
        written += len(chunk)
        if written > cap:
            raise _TooLarge(f"{DB_MEMBER} inflates to more than {cap} bytes, beyond what its header claims; "
                            "not a database TREK wrote")
        out.write(chunk)


def _date(info: zipfile.ZipInfo) -> str:
    y, mo, d, h, mi, s = info.date_time
    return f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"


def _clean(message: str, temp_db: Path, zip_path: Path) -> str:
    """Error messages name the ZIP, not the throwaway copy they were raised about."""
    return message.replace(str(temp_db.parent), f"{zip_path}!").replace(f"{zip_path}!/", f"{zip_path}!")


def inspect_backup(zip_path: Path, keys: Sequence[Key]) -> BackupStatus:
    """Which of ``keys`` opens the secrets of one backup: all, some or none."""
    size = zip_path.stat().st_size
    try:
        with _extracted_database(zip_path) as (db, info):
            try:
                report = verify_database(db, keys)
            except KeyrotateError as exc:
                return BackupStatus(str(zip_path), _date(info), size, problem=_clean(exc.message, db, zip_path))
            total = report.catalogued_tokens
            verdicts = []
            for index, key in enumerate(keys):
                opened = sum(loc.opened_by[index] for loc in report.locations if loc.catalogued and loc.opened_by)
                opens = "no secrets" if total == 0 else "all" if opened == total else "some" if opened else "none"
                verdicts.append(KeyVerdict(key.source, opens, opened, total))
            return BackupStatus(str(zip_path), _date(info), size, tuple(verdicts))
    except _Unusable as exc:
        return BackupStatus(str(zip_path), "", size, problem=exc.reason)


def list_backups(data_dir: Path, keys: Sequence[Key]) -> tuple[BackupStatus, ...]:
    return tuple(inspect_backup(path, keys) for path in find_backups(data_dir))


def rekey_backup(
    zip_path: Path,
    old_keys: Sequence[Key],
    new_key: Key,
    *,
    encrypt_plaintext: bool = False,
    dry_run: bool = False,
) -> RekeyResult:
    """Re-encrypt the ``travel.db`` inside one backup ZIP, or leave the ZIP exactly as it is.

    The new ZIP is written next to the old one (mode 0600), checked member by
    member, fsynced and renamed over it, so a crash leaves either the old ZIP
    or the new one, never half of either.
    """
    if zip_path.is_symlink():
        return RekeyResult(str(zip_path), "left as it is", "it is a symbolic link and keyrotate never writes through "
                           "one; rekey the file it points to")
    try:
        with zip_path.open("rb") as archive:
            check_replaceable(archive, DB_MEMBER)  # before any work, so a dry run reports what the run will do
        with _extracted_database(zip_path) as (db, _info):
            try:
                report = rotate_database(
                    RotateOptions(db, tuple(old_keys), new_key, backup_path=None, dry_run=dry_run,
                                  encrypt_plaintext=encrypt_plaintext)
                )
            except WrongKeyError:
                return RekeyResult(str(zip_path), "left as it is",
                                   "none of the old keys opens its secrets: it was made under another key; give that "
                                   "key too (--old-key-file is repeatable)")
            except KeyrotateError as exc:
                return RekeyResult(str(zip_path), "left as it is", _clean(exc.message, db, zip_path))
            if dry_run:
                outcome = "would be rekeyed" if report.rotated else "already on the new key"
                return RekeyResult(str(zip_path), outcome, rotated=report.rotated)
            if not report.committed:
                return RekeyResult(str(zip_path), "already on the new key")
            _write_archive(zip_path, db)
            return RekeyResult(str(zip_path), "rekeyed", rotated=report.rotated)
    except _Unusable as exc:
        return RekeyResult(str(zip_path), "left as it is", exc.reason)
    except ZipLayoutError as exc:
        return RekeyResult(str(zip_path), "left as it is", exc.reason)
    except OSError as exc:
        return RekeyResult(str(zip_path), "left as it is", f"writing the new ZIP failed ({exc.strerror or exc})")


# Called before each ZIP (result None) and after it: (number from 1, how many, result, path).
RekeyProgress = Callable[[int, int, "RekeyResult | None", Path], None]


def rekey_backups(
    paths: Sequence[Path], old_keys: Sequence[Key], new_key: Key, *, encrypt_plaintext: bool = False,
    dry_run: bool = False, on_each: RekeyProgress | None = None,
) -> tuple[RekeyResult, ...]:
    """One ZIP after the other; an interrupt between or inside them leaves each ZIP whole, under one key."""
    results = []
    for number, path in enumerate(paths, 1):
        if on_each is not None:
            on_each(number, len(paths), None, path)
        results.append(rekey_backup(path, old_keys, new_key, encrypt_plaintext=encrypt_plaintext, dry_run=dry_run))
        if on_each is not None:
            on_each(number, len(paths), results[-1], path)
    return tuple(results)


def _write_archive(zip_path: Path, new_db: Path) -> None:
    # Run as root against a TREK volume, the new ZIP must still belong to TREK's user.
    with replacing(zip_path, owner_like=zip_path) as (partial, out), zip_path.open("rb") as source:
        layout = read_layout(source)
        replace_member(source, layout, DB_MEMBER, new_db, out)
        out.flush()
        _check_archive(zip_path, partial, new_db)


def _sha256(handle: IO[bytes]) -> bytes:
    digest = hashlib.sha256()
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    return digest.digest()


def _check_archive(original: Path, rewritten: Path, new_db: Path) -> None:
    """Same members in the same order with the same names, times and contents; travel.db is the new one."""
    with zipfile.ZipFile(original) as old, zipfile.ZipFile(rewritten) as new:
        if new.testzip() is not None:
            raise ZipLayoutError("the rewritten ZIP failed its own CRC check; the original was kept")
        old_infos, new_infos = old.infolist(), new.infolist()
        if [i.filename for i in old_infos] != [i.filename for i in new_infos]:
            raise ZipLayoutError("the rewritten ZIP lists different members; the original was kept")
        for before, after in zip(old_infos, new_infos, strict=True):
            same = (before.date_time, before.external_attr) == (after.date_time, after.external_attr)
            if before.filename != DB_MEMBER:
                same = same and (before.CRC, before.compress_size, before.file_size) == (
                    after.CRC, after.compress_size, after.file_size)
            if not same:
                raise ZipLayoutError(f"member {before.filename!r} changed while rewriting; the original was kept")
        with new.open(DB_MEMBER) as member:
            inside = _sha256(member)
    with new_db.open("rb") as handle:
        if _sha256(handle) != inside:
            raise ZipLayoutError("travel.db inside the rewritten ZIP does not match the rotated copy; the original was kept")


@dataclass(frozen=True)
class BackupListing:
    """:func:`list_backups` as a renderable report."""

    directory: str
    backups: tuple[BackupStatus, ...]

    checklist = False
    title = "TREK backup ZIPs"
    columns = ("backup", "date", "size", "opens with")

    def rows(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        for b in self.backups:
            opens = b.problem and f"cannot be checked: {b.problem}" or "; ".join(
                f"{v.key_source}: {v.opens} ({v.opened}/{v.total})" for v in b.keys)
            out.append((Path(b.path).name, b.date, f"{b.size} bytes", opens))
        return out

    def notes(self) -> list[str]:
        if not self.backups:
            return [f"No backup-*.zip or auto-backup-*.zip in {self.directory}."]
        return [f"{len(self.backups)} backup(s) in {self.directory}. Dates are those of travel.db inside each ZIP.",
                "A backup opens with the key of the day it was made; after a rotation, re-encrypt them with "
                "`keyrotate rekey-backup` (or `rotate --rekey-backups`) so a restore still works."]

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "command": "backups", "directory": self.directory,
                "backups": [asdict(b) for b in self.backups]}


@dataclass(frozen=True)
class RekeyReport:
    results: tuple[RekeyResult, ...]

    checklist = False
    title = "Backup ZIPs re-encrypted"
    columns = ("backup", "outcome", "secrets", "reason")

    @property
    def left_alone(self) -> tuple[RekeyResult, ...]:
        return tuple(r for r in self.results if r.left_alone)

    def rows(self) -> list[tuple[str, ...]]:
        return [(r.path, r.outcome, str(r.rotated), r.reason) for r in self.results]

    def notes(self) -> list[str]:
        notes = [f"LEFT AS IT IS (still opens only with its old key, if at all): {r.path}: {r.reason}"
                 for r in self.left_alone]
        if any(r.outcome == "rekeyed" for r in self.results):
            notes.append("The copies of travel.db extracted to re-encrypt them were deleted. Copies of these ZIPs "
                         "made before today (off-site, other disks) still open with the old key.")
        return notes

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "command": "rekey-backup",
                "results": [asdict(r) for r in self.results]}
