"""Backing a database up through SQLite's backup API, in the background when that is safe."""

from __future__ import annotations

import shlex
import sqlite3
from contextlib import closing
from pathlib import Path

from keyrotate.errors import CannotWriteError
from keyrotate.store import uncommitted
from keyrotate.store.database import PASS_THROUGH_CACHE_KIB, read_only_uri
from keyrotate.store.files import publish, temporary_beside
from keyrotate.store.in_thread import InThread
from keyrotate.store.integrity import check_integrity


def refuse_linked_backup(destination: Path) -> None:
    """The backup's name must not be a link to follow."""
    if destination.is_symlink():
        raise CannotWriteError(f"Backup {destination} is a symbolic link; keyrotate never writes through one. "
                               "Remove it or choose another --backup path; nothing was changed.")


def refuse_existing_backup(destination: Path) -> None:
    """Nothing may be at the backup's name yet: not a file, and not a link to follow."""
    refuse_linked_backup(destination)
    if destination.exists():
        raise CannotWriteError(f"Backup {destination} already exists; choose another --backup path. Nothing was "
                               "changed.")


def copy_pages(source: sqlite3.Connection, target: sqlite3.Connection) -> None:
    """Copy every page in one step (tests/kill_at.py swaps in a stepwise copy to kill mid-copy)."""
    source.backup(target)


def backup_database(path: Path, destination: Path) -> None:
    """A consistent copy through SQLite's backup API, mode 0600, integrity-checked.

    Written to a new temporary file next to ``destination`` and linked to its
    name only once it checks out, so a half-written backup never carries its
    name, and nothing already at that name (a planted link) is followed or replaced.
    """
    parent = destination.parent
    refuse_existing_backup(destination)
    if not parent.is_dir():
        raise CannotWriteError(f"Backup directory {parent} does not exist.")
    try:
        with temporary_beside(destination, f"{path.name}.keyrotate-backup") as (partial, fd):
            with closing(sqlite3.connect(read_only_uri(path), uri=True)) as source, closing(
                sqlite3.connect(str(partial), isolation_level=None)
            ) as target:
                for conn in (source, target):
                    conn.execute(f"PRAGMA cache_size = -{PASS_THROUGH_CACHE_KIB}")
                copy_pages(source, target)
                # One self-contained file: no -wal to forget when restoring.
                target.execute("PRAGMA journal_mode=DELETE")
                check_integrity(target, path)  # a page-for-page copy: its damage is the database's
            publish(partial, fd, destination)
    except (sqlite3.Error, OSError) as exc:
        raise CannotWriteError(
            f"The backup to {destination} failed ({exc}). Free some space or choose another --backup path; "
            "nothing was changed."
        ) from None


class BackupJob:
    """:func:`backup_database`, run in a thread alongside the rotation when that is safe.

    In WAL mode the backup's read snapshot cannot see the rotation's uncommitted
    writes, so the copy is the pre-rotation database even while the rotation
    writes; SQLite runs the copy and its integrity check without holding
    Python's lock, so they overlap the crypto. In other journal modes the copy
    is made in place, before the first write. :meth:`wait` must return before
    the rotation commits; :meth:`discard` removes the copy when nothing was
    committed.
    """

    def __init__(self, source: Path, destination: Path, *, in_background: bool) -> None:
        self.source = source
        self.destination = destination
        self.in_background = in_background
        self._copy: InThread[None] | None = None
        self.started = False
        self._marker: Path | None = None

    def start(self) -> None:
        # Before marking anything: a file already at the name is not this run's to mark, or to delete on failure.
        refuse_existing_backup(self.destination)
        self._marker = uncommitted.mark(self.source, self.destination)
        if not self.in_background:
            backup_database(self.source, self.destination)
            self.started = True  # only now is there a copy of this run's to discard
            return
        self.started = True
        self._copy = InThread(lambda: backup_database(self.source, self.destination), "keyrotate-backup")

    def wait(self) -> Path | None:
        """The finished backup (None if never started); raises what the copy raised."""
        copy, self._copy = self._copy, None
        if copy is not None:
            try:
                copy.result()
            except BaseException:
                self.started = False
                raise
        return self.destination if self.started else None

    def committing(self) -> None:
        """The COMMIT comes next: from now on the backup is the real pre-rotation copy, not a leftover."""
        self._unmark()

    def discard(self) -> None:
        """Nothing was committed: wait for the copy, then delete it (it only adds exposure)."""
        try:
            done = self.wait()
        except BaseException:  # a failed copy cleans up after itself
            done = None
        if done is not None:
            done.unlink(missing_ok=True)
        self.started = False
        self._unmark()  # the copy is gone: nothing for the next run to remove

    def _unmark(self) -> None:
        if self._marker is not None:
            uncommitted.unmark(self._marker)
            self._marker = None


def restore_command(backup: Path, db: Path, key_file: Path | None = None, saved_key: Path | None = None) -> str:
    """One line of shell that puts a backup back (TREK stopped), absolute paths, quoted.

    With ``key_file``, the key the backup opens with goes back too: ``saved_key``'s
    content, or, without one, no key file at all (there was none before the rotation).
    """
    b, d = str(backup.absolute()), str(db.resolve())
    command = f"cat {shlex.quote(b)} > {shlex.quote(d)} && rm -f {shlex.quote(d + '-wal')} {shlex.quote(d + '-shm')}"
    if key_file is None:
        return command
    k = shlex.quote(str(key_file.absolute()))
    if saved_key is None:
        return f"{command} && rm -f {k}"
    return f"{command} && cat {shlex.quote(str(saved_key.absolute()))} > {k}"
