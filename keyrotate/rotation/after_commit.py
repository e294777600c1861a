"""After the COMMIT: old ciphertexts compacted out of the files, then proof on a fresh connection that the checked texts are on disk."""

from __future__ import annotations

import os
import shlex
import sqlite3
from contextlib import closing, suppress
from pathlib import Path

from keyrotate.errors import VerificationError
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.outcome import RunFacts
from keyrotate.rotation.reading import count_rows, read_batches
from keyrotate.rotation.scanning import ProgressCallback
from keyrotate.rotation.session import snapshot
from keyrotate.rotation.stored import StoredDigest, differing_labels
from keyrotate.rotation.targets import DiscoveryTarget, Target, plan_targets
from keyrotate.store.backup import restore_command
from keyrotate.store.database import PASS_THROUGH_CACHE_KIB, checkpoint, connect, data_version, is_busy
from keyrotate.store.in_thread import InThread


class ReadBack:
    """The proof's reading on a fresh connection, in a thread of its own, started right after the COMMIT.

    Only for a WAL database compacted after the COMMIT: the VACUUM runs in SQLite
    without holding Python's lock, so the two share the machine's cores, and the
    VACUUM does not wait for this reader (WAL readers and the writer do not block
    each other). Whether this reading sees the file before or after the VACUUM,
    the texts are the committed ones: a VACUUM changes no value. A commit by
    another connection meanwhile is the engine's to notice (``PRAGMA
    data_version``); it then reads everything again after the checkpoint.
    """

    def __init__(self, run: RunFacts, written: StoredDigest, progress: ProgressCallback | None,
                 found_outside: frozenset[str]) -> None:
        self._reading = InThread(lambda: _compare(run, written, progress, found_outside), "keyrotate-read-back")

    def wait(self) -> None:
        """Until it is done (what it found is for :meth:`problem`): its snapshot would hold up the checkpoint."""
        with suppress(Exception):
            self._reading.result()

    def problem(self) -> str | None:
        """What differs (None: nothing); raises the :class:`sqlite3.Error` that kept it from reading."""
        return self._reading.result()


def vacuum_temp_directory() -> str:
    """Where SQLite on Unix puts VACUUM's temporary copy: the first usable of these, as its os_unix.c lists them."""
    for candidate in (os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), "/var/tmp", "/usr/tmp", "/tmp"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return "."


def scrub_after_commit(conn: sqlite3.Connection, options: RotateOptions, reading: ReadBack | None = None) -> list[str]:
    """Compact (if asked) and empty the -wal, so old ciphertexts leave the database files.

    The rotation is committed by now: a failure here is a warning, not a reason to
    stop before the key file is written. ``reading``, running alongside the
    VACUUM, is waited for before the checkpoint, which could not empty the -wal
    under its snapshot.
    """
    warnings = []
    if options.vacuum:
        try:
            conn.execute(f"PRAGMA cache_size = -{PASS_THROUGH_CACHE_KIB}")  # drops the pass's pages first
            conn.execute("VACUUM")
        except sqlite3.Error as exc:
            cause = ("another program opened the database after the commit (TREK started already?): stop it, then"
                     if is_busy(exc) else
                     "VACUUM needs room for a copy of the database both beside it and in the temporary directory "
                     f"({vacuum_temp_directory()}): free some space and")
            warnings.append(
                f"The rotation is committed, but compacting the database failed ({exc}): unused space in "
                f"{options.db_path} may still hold old ciphertexts. The cause: {cause} "
                f"run: sqlite3 {shlex.quote(str(options.db_path))} 'VACUUM'"
            )
    else:
        warnings.append(
            f"Not compacted (--no-vacuum): unused space in {options.db_path} may still hold old ciphertexts."
        )
    if reading is not None:
        reading.wait()
    try:
        emptied = checkpoint(conn)
    except sqlite3.Error as exc:
        emptied = False
        warnings.append(f"Emptying {options.db_path}-wal failed ({exc}).")
    if not emptied:
        warnings.append(
            f"{options.db_path}-wal could not be emptied (another program has the database open): until TREK's next "
            "checkpoint, the main file may still hold pages with the old ciphertexts."
        )
    return warnings


def committed_elsewhere(conn: sqlite3.Connection, version: int) -> bool:
    """Whether another connection committed (or checkpointed) since ``PRAGMA data_version`` was ``version`` on
    ``conn``, the rotation's own connection; True when it cannot be told.

    The connection's own commits (the VACUUM) and checkpoints leave its ``data_version`` as it was.
    """
    try:
        return data_version(conn) != version
    except sqlite3.Error:
        return True


def verify_after_commit(
    run: RunFacts,
    written: StoredDigest,
    backup: Path | None,
    progress: ProgressCallback | None,
    found_outside: frozenset[str],
    read_already: ReadBack | None = None,
) -> None:
    """Reopen the file and prove every secret location holds exactly the text the rotation wrote or left there.

    The texts read back on a fresh connection are digested like the ones the
    pass wrote or left (:class:`StoredDigest`); every new one was decrypted
    again before it was written, so no value is decrypted here. Outside the
    catalogue only the tables where the rotation found tokens are read again:
    the rotation wrote nothing anywhere else. ``read_already`` is that reading
    done alongside the VACUUM (:class:`ReadBack`); it is done again here if it
    could not read.
    """
    try:
        problem = (read_already.problem() if read_already is not None
                   else _read_now(run, written, progress, found_outside))
    except sqlite3.Error:  # the reading alongside the VACUUM could not read: once more, now
        problem = _read_now(run, written, progress, found_outside)
    if problem is None:
        return
    raise VerificationError(f"The rotation was committed but the check on a fresh connection failed: {problem}."
                            f"{_restore_advice(run.options, backup)}")


def _read_now(run: RunFacts, written: StoredDigest, progress: ProgressCallback | None,
              found_outside: frozenset[str]) -> str | None:
    try:
        return _compare(run, written, progress, found_outside)
    except sqlite3.Error as exc:
        return f"the database could not be read back ({exc})"


def _compare(run: RunFacts, written: StoredDigest, progress: ProgressCallback | None,
             found_outside: frozenset[str]) -> str | None:
    """Every target read back on a fresh connection, in one snapshot: what differs from ``written``, or None."""
    options = run.options
    read_back = StoredDigest(written.key, written.loose)
    targets = plan_targets(run.info, run.resolved, found_outside)
    with closing(connect(options.db_path, busy_timeout=options.busy_timeout)) as conn:
        conn.execute(f"PRAGMA cache_size = -{PASS_THROUGH_CACHE_KIB}")  # each page is read once; beside the VACUUM
        with snapshot(conn):
            for target in targets:
                _read_back(conn, target, read_back, progress)
    labels = {target.label for target in targets}
    differing = differing_labels(written, read_back, labels)
    if not differing:
        return None
    return (f"the values stored in {', '.join(differing[:3])}{' and others' if len(differing) > 3 else ''} "
            f"are not the ones written and checked ({read_back.count(labels)} read back, "
            f"{written.count(labels)} written or left as they were)")


def _read_back(conn: sqlite3.Connection, target: Target, digest: StoredDigest,
               progress: ProgressCallback | None) -> None:
    total = count_rows(conn, target) if progress else None
    if progress:
        progress("verify", target.label, 0, total)
    for batch in read_batches(conn, target):
        if isinstance(target, DiscoveryTarget):
            digest.add_cells(target.label, target.columns, batch, ())
        else:
            digest.add_values(target.label, batch, ())
        if progress:
            progress("verify", target.label, len(batch), total)


def _restore_advice(options: RotateOptions, backup: Path | None) -> str:
    if backup is None:
        return ""
    command = restore_command(backup, options.db_path)
    if not options.allow_running:
        return f" Restore the backup with: {command}"
    # The other program kept writing after the backup was taken; restoring would silently drop that.
    return (" The database was open in another program (--allow-running): restoring the backup would discard "
            "everything written since it was taken. Instead, stop that program (TREK) and run the same command "
            "again without --allow-running: it re-encrypts what is still under the old key. Restore only if that "
            f"fails, knowing those writes are lost: {command}")
