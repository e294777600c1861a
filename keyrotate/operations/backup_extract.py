"""Extract the ``travel.db`` of one TREK backup ZIP into a private directory beside it, safely.

The directory (``.<zip>.keyrotate-extract-*``, 0700) sits next to the ZIP, on the disk the rewritten ZIP
goes to, and is locked (``flock``) while in use. A run killed before it removes it leaves a copy of the
database under the ZIP's old key there, never somewhere unrelated: the next run that rekeys or lists
the ZIPs removes it and says so, and ``exposure`` lists it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from keyrotate.errors import CannotWriteError
from keyrotate.store.files import new_file

DB_MEMBER = "travel.db"
_SIDE_FILES = ("travel.db-wal", "travel.db-journal")

# A travel.db deflates 3 to 10 times; a member claiming far more is a bomb (or a file of empty pages), and it is
# extracted to the temporary directory, which is often a small tmpfs. Below RATIO_FLOOR the ratio is not checked.
MAX_RATIO = 100
RATIO_FLOOR = 256 << 20
FREE_SPACE_MARGIN = 64 << 20  # left free for the rotation's journal and the rest of the system
EXTRACT_MARK = ".keyrotate-extract-"


class Unusable(Exception):
    """A backup ZIP keyrotate will not read or rewrite; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLarge(Unusable):
    pass


@contextmanager
def extracted_database(zip_path: Path) -> Iterator[tuple[Path, zipfile.ZipInfo]]:
    """``travel.db`` from the ZIP in a fresh 0700 directory beside it, locked while in use, removed on exit.

    The whole archive is CRC-checked first: a ZIP with a damaged member is not
    one keyrotate rewrites.
    """
    workdir, lock = _locked_workdir(zip_path)
    try:
        os.chmod(workdir, 0o700)
        try:
            with zipfile.ZipFile(zip_path) as archive:
                info, cap = _database_member(archive, workdir)
                target = workdir / DB_MEMBER
                with new_file(target) as out, archive.open(info) as member:
                    _copy_capped(member, out, cap)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError, zlib.error) as exc:
            raise Unusable(f"cannot be read as a ZIP ({exc})") from None
        except OSError as exc:
            raise Unusable(f"cannot be read ({exc.strerror or exc})") from None
        except CannotWriteError as exc:  # no room (or no inode) for the copy beside it: this ZIP waits, as when full
            raise Unusable(f"cannot be extracted beside it: {exc.message} Free some space and run the same command "
                           "again.") from None
        yield target, info
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        os.close(lock)


def _locked_workdir(zip_path: Path) -> tuple[Path, int]:
    try:
        workdir = Path(tempfile.mkdtemp(prefix=f".{zip_path.name}{EXTRACT_MARK}", dir=zip_path.parent))
    except OSError:  # a read-only backups directory, only ever listed: the system's temporary directory
        workdir = Path(tempfile.mkdtemp(prefix="keyrotate-zip-"))
    lock = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh directory: nobody else holds it
    return workdir, lock


def leftover_extractions(folder: Path) -> list[Path]:
    """The directories beside the ZIPs in ``folder`` that stopped runs extracted a travel.db into
    (not those a running keyrotate holds locked)."""
    found = []
    for path in sorted(folder.glob(f".*{EXTRACT_MARK}*")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone already, or not a directory keyrotate made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            found.append(path)
        except OSError:
            pass  # in use by a run that is still going
        finally:
            os.close(fd)
    return found


def remove_leftover_extractions(folder: Path) -> list[str]:
    """Delete what :func:`leftover_extractions` finds; one sentence for each directory removed."""
    removed = []
    for path in leftover_extractions(folder):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(f"Removed {path}: a copy of travel.db under the old key of {extracted_from(path)}, "
                           "extracted by an earlier keyrotate run that was stopped before it could delete it.")
    return removed


def extracted_from(workdir: Path) -> str:
    """The ZIP a leftover directory's copy came from."""
    return workdir.name[1:workdir.name.rindex(EXTRACT_MARK)]


def _database_member(archive: zipfile.ZipFile, workdir: Path) -> tuple[zipfile.ZipInfo, int]:
    """The one top-level travel.db and the most bytes it may inflate to, after the CRC check of every member."""
    names = archive.namelist()
    if names.count(DB_MEMBER) != 1:
        raise Unusable(f"holds {names.count(DB_MEMBER)} '{DB_MEMBER}' members at its top level, not 1")
    side = [n for n in _SIDE_FILES if n in names]
    if side:
        raise Unusable(f"also holds {', '.join(side)}; keyrotate only rewrites a self-contained travel.db")
    info = archive.getinfo(DB_MEMBER)
    cap = _extraction_cap(info, workdir)  # before the CRC check, which inflates every member
    bad = archive.testzip()
    if bad is not None:
        raise Unusable(f"member {bad!r} fails its CRC check (damaged ZIP)")
    return info, cap


def _extraction_cap(info: zipfile.ZipInfo, workdir: Path) -> int:
    """The most bytes travel.db may inflate to; refuses before writing anything if its header claims more."""
    available = shutil.disk_usage(workdir).free
    free = available - FREE_SPACE_MARGIN
    by_ratio = max(RATIO_FLOOR, info.compress_size * MAX_RATIO)
    if info.file_size > free:
        raise TooLarge(f"{DB_MEMBER} would inflate to {info.file_size} bytes; {workdir.parent} needs that plus "
                       f"{FREE_SPACE_MARGIN // 2**20} MiB kept free for the database beside it "
                       f"({info.file_size + FREE_SPACE_MARGIN} bytes) and has {available}: free some space there, "
                       "then run the same command again")
    if info.file_size > by_ratio:
        raise TooLarge(f"{DB_MEMBER} would inflate {info.file_size // max(info.compress_size, 1)} times "
                       f"({info.compress_size} to {info.file_size} bytes): not a database TREK wrote")
    return min(free, by_ratio)


def _copy_capped(member: IO[bytes], out: IO[bytes], cap: int) -> None:
    """Copy, stopping at ``cap`` bytes whatever the ZIP's header said."""
    written = 0
    while chunk := member.read(1 << 20):
        written += len(chunk)
        if written > cap:
            raise TooLarge(f"{DB_MEMBER} inflates to more than {cap} bytes, beyond what its header claims; "
                           "not a database TREK wrote")
        out.write(chunk)


def member_date(info: zipfile.ZipInfo) -> str:
    """The ZIP member's timestamp (TREK's local clock when it made the backup)."""
    y, mo, d, h, mi, s = info.date_time
    return f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"


def name_the_zip(message: str, temp_db: Path, zip_path: Path) -> str:
    """Error messages name the ZIP, not the throwaway copy they were raised about."""
    return message.replace(str(temp_db.parent), f"{zip_path}!").replace(f"{zip_path}!/", f"{zip_path}!")
