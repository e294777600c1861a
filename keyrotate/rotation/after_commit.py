"""After the COMMIT: old ciphertexts compacted out of the files, then proof on a fresh connection that the checked texts are on disk."""

from __future__ import annotations

import shlex
import sqlite3
from contextlib import closing
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
from keyrotate.store.database import PASS_THROUGH_CACHE_KIB, checkpoint, connect


def scrub_after_commit(conn: sqlite3.Connection, options: RotateOptions) -> list[str]:
    """Compact (if asked) and empty the -wal, so old ciphertexts leave the database files.

    The rotation is committed by now: a failure here is a warning, not a reason to
    stop before the key file is written.
    """
    warnings = []
    if options.vacuum:
        try:
            conn.execute(f"PRAGMA cache_size = -{PASS_THROUGH_CACHE_KIB}")  # drops the pass's pages first
            conn.execute("VACUUM")
        except sqlite3.Error as exc:
            warnings.append(
                f"The rotation is committed, but compacting the database failed ({exc}): unused space in "
                f"{options.db_path} may still hold old ciphertexts. Free some space and run: "
                f"sqlite3 {shlex.quote(str(options.db_path))} 'VACUUM'"
            )
    else:
        warnings.append(
            f"Not compacted (--no-vacuum): unused space in {options.db_path} may still hold old ciphertexts."
        )
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


def verify_after_commit(
    run: RunFacts,
    written: StoredDigest,
    backup: Path | None,
    progress: ProgressCallback | None,
    found_outside: frozenset[str],
) -> None:
    """Reopen the file and prove every secret location holds exactly the text the rotation wrote or left there.

    The texts read back on a fresh connection are digested like the ones the
    pass wrote or left (:class:`StoredDigest`); every new one was decrypted
    again before it was written, so no value is decrypted here. Outside the
    catalogue only the tables where the rotation found tokens are read again:
    the rotation wrote nothing anywhere else.
    """
    options = run.options
    read_back = StoredDigest(written.key, written.loose)
    targets = plan_targets(run.info, run.resolved, found_outside)
    try:
        with closing(connect(options.db_path, busy_timeout=options.busy_timeout)) as conn, snapshot(conn):
            for target in targets:
                _read_back(conn, target, read_back, progress)
    except sqlite3.Error as exc:
        problem = f"the database could not be read back ({exc})"
    else:
        labels = {target.label for target in targets}
        differing = differing_labels(written, read_back, labels)
        if not differing:
            return
        problem = (f"the values stored in {', '.join(differing[:3])}{' and others' if len(differing) > 3 else ''} "
                   f"are not the ones written and checked ({read_back.count(labels)} read back, "
                   f"{written.count(labels)} written or left as they were)")
    raise VerificationError(f"The rotation was committed but the check on a fresh connection failed: {problem}."
                            f"{_restore_advice(options, backup)}")


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
