"""Backups of rotations that never reached their COMMIT, and how the next run finds them.

A run writes a small marker next to the database (naming its backup) before the backup starts, and removes it
just before its COMMIT. A marker found later therefore belongs to a run that was stopped (killed, power cut)
before it changed anything: its backup is a redundant full copy of a database that is still as it was, and
only adds exposure. A run killed during or after its COMMIT leaves no marker, so its backup, the one copy
under the old key, is never touched.
"""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from pathlib import Path

from keyrotate.store.files import fsync_directory, write_new_file


def _prefix(db: Path) -> str:
    return f".{db.name}.keyrotate-uncommitted-"


def mark(db: Path, backup: Path) -> Path:
    """Say, durably, that ``backup`` belongs to a run that has not committed yet."""
    marker = db.parent / f"{_prefix(db)}{backup.name}"
    with suppress(FileNotFoundError):
        os.unlink(marker)  # a leftover of a killed run with the same backup name: only ever our own
    write_new_file(marker, os.fsencode(backup.absolute()))
    return marker


def unmark(marker: Path) -> None:
    with suppress(FileNotFoundError):
        marker.unlink()
        fsync_directory(marker.parent)


def remove_leftovers(db: Path) -> list[Path]:
    """Delete the backups (and markers) of earlier runs that never committed; returns the backups deleted.

    Call only while holding the database's write lock: a run that is still going holds it from before its
    marker is written until after the marker is removed.
    """
    removed = []
    for marker in sorted(db.parent.glob(f"{_prefix(db)}*")):
        try:
            backup = Path(os.fsdecode(marker.read_bytes()))
            if stat.S_ISREG(os.lstat(backup).st_mode):  # never through a link planted at that name
                backup.unlink()
                removed.append(backup)
        except OSError:
            pass  # the run died before its backup existed, or it was deleted already
        unmark(marker)
    return removed
