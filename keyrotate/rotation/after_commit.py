"""After the COMMIT: old ciphertexts compacted out of the files, then proof on a fresh connection that all came back."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from keyrotate.errors import VerificationError
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.outcome import RunFacts
from keyrotate.rotation.scanning import ProgressCallback, Scanner
from keyrotate.rotation.session import snapshot
from keyrotate.rotation.tallies import Fingerprint
from keyrotate.rotation.workers import CryptoPool
from keyrotate.store.backup import restore_command
from keyrotate.store.database import checkpoint, connect
from keyrotate.trek.formats import Keyring


def scrub_after_commit(conn: sqlite3.Connection, options: RotateOptions) -> list[str]:
    """Compact (if asked) and empty the -wal, so old ciphertexts leave the database files.

    The rotation is committed by now: a failure here is a warning, not a reason to
    stop before the key file is written.
    """
    warnings = []
    if options.vacuum:
        try:
            conn.execute("VACUUM")
        except sqlite3.Error as exc:
            warnings.append(
                f"The rotation is committed, but compacting the database failed ({exc}): unused space in "
                f"{options.db_path} may still hold old ciphertexts. Free some space and run: "
                f"sqlite3 {options.db_path} 'VACUUM'"
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
    expected: Fingerprint,
    backup: Path | None,
    progress: ProgressCallback | None,
    pool: CryptoPool | None,
    found_outside: frozenset[str],
) -> None:
    """Reopen the file and prove every plaintext came back, now under the new key.

    The fingerprint of (location, row, plaintext) pairs read now must equal the
    one taken while writing, and no value may still open under an old key.
    Outside the catalogue only the tables where the rotation found tokens are
    searched again: the rotation wrote nothing anywhere else.
    """
    options = run.options
    fingerprint = Fingerprint(expected.salt)
    try:
        with closing(connect(options.db_path, busy_timeout=options.busy_timeout)) as conn, snapshot(conn):
            scanner = Scanner(conn, run.info, run.resolved, Keyring((options.new_key, *options.old_keys)),
                              fingerprint=fingerprint, pool=pool, discovery_tables=found_outside,
                              count_empty=False)  # only leftovers and the fingerprint matter here
            scanner.run("verify", progress)
    except sqlite3.Error as exc:
        problem = f"the database could not be read back ({exc})"
    else:
        leftovers = sum(sum(t.opened_by[1:]) for t in scanner.tallies.values())
        if leftovers:
            problem = f"{leftovers} value(s) still open under an old key"
        elif (fingerprint.value, fingerprint.count) != (expected.value, expected.count):
            problem = (f"the secrets read back ({fingerprint.count}) do not match the ones written "
                       f"({expected.count})")
        else:
            return
    raise VerificationError(f"The rotation was committed but the check on a fresh connection failed: {problem}."
                            f"{_restore_advice(options, backup)}")


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
