"""Rotation and verification of a whole TREK database.

Order of work in :func:`rotate_database`: take the write lock, then one pass
that checks every value opens, re-encrypts it and decrypts the new value again
before writing it (the backup starts just before the first write and must be
finished before the commit), then the decision: if any catalogued secret did
not open, roll everything back; otherwise commit, compact, and reopen the
database on a fresh connection to verify everything once more. When someone
must confirm the plan first, a read-only check pass runs before the rotation
pass. Nothing here prints; progress goes to a callback and the outcome comes
back as a report.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from keyrotate.crashpoints import crash_point
from keyrotate.errors import (
    CancelledError,
    CannotWriteError,
    DatabaseBusyError,
    KeyProblemError,
    KeyrotateError,
    UndecryptableError,
    VerificationError,
    WrongKeyError,
)
from keyrotate.interrupts import COMMITTED, ROLLED_BACK, Hold, Interrupted, signal_number
from keyrotate.rotation.old_key import save_old_key
from keyrotate.rotation.report import (
    FailedSecret,
    LocationResult,
    RotationReport,
    VerifyReport,
    summarise_failures,
    unopened_by_label,
)
from keyrotate.rotation.revoke import Revocation, revoke_tokens
from keyrotate.rotation.scanning import Fingerprint, Keyring, ProgressCallback, Rewrite, Scanner, Tally, new_fingerprint
from keyrotate.rotation.session import crypto_pool, open_database, read_session, snapshot
from keyrotate.rotation.workers import CryptoPool
from keyrotate.store.database import (
    WRITE_CACHE_KIB,
    BackupJob,
    checkpoint,
    connect,
    quote_identifier,
    refuse_existing_backup,
    restore_command,
    translate_error,
    write_transaction,
)
from keyrotate.store.files import check_replaceable, replacing
from keyrotate.store.processes import refuse_if_open_elsewhere
from keyrotate.store.uncommitted import remove_leftovers
from keyrotate.trek.audit_log import ROTATE_ENCRYPTION_KEY, record_in_audit_log
from keyrotate.trek.catalogue import CATALOGUE, Presence, ResolvedLocation, resolve_catalogue
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key, js_trim, refuse_unreadable_new_key
from keyrotate.trek.schema import DatabaseInfo


@dataclass(frozen=True)
class RotateOptions:
    db_path: Path
    old_keys: tuple[Key, ...]
    new_key: Key
    backup_path: Path | None  # None only when the user asked for no backup (or a dry run)
    dry_run: bool = False
    skip_undecryptable: bool = False
    encrypt_plaintext: bool = False
    busy_timeout: float = 10.0
    key_file: Path | None = None  # data/.encryption_key to update after the commit
    allow_running: bool = False  # skip the check for other processes holding the database open
    # Rebuild the file after the commit. secure_delete zeroes what this run frees, but SQLite leaves stale
    # copies of cells in pages it reorganised long before (TREK's own fixture has 278 copies of 219 tokens).
    vacuum: bool = True
    workers: int | None = None  # crypto worker processes; None decides from the cores and the database size
    audit_log: bool = False  # one row in TREK's audit_log, inside the rotation's transaction, when the table exists
    save_old_key: bool = False  # keep key_file's old key beside the backup before replacing it
    revoke: Revocation = Revocation()  # plaintext bearer tokens to remove in the same transaction


@dataclass(frozen=True)
class RotationPlan:
    """What the check found, shown to the user before anything is written."""

    to_rotate: int
    to_encrypt: int
    already_new: int
    failed: int
    locations: tuple[LocationResult, ...]

    @property
    def has_work(self) -> bool:
        return bool(self.to_rotate or self.to_encrypt)


@dataclass(frozen=True)
class _Run:
    """What every report of one rotation shares."""

    options: RotateOptions
    info: DatabaseInfo
    keys: tuple[Key, ...]
    resolved: tuple[ResolvedLocation, ...]


ConfirmCallback = Callable[[RotationPlan], bool]
NoticeCallback = Callable[[str], None]  # one line for the person running keyrotate


def check_keys(old_keys: Sequence[Key], new_key: Key) -> None:
    refuse_unreadable_new_key(new_key)
    if not old_keys:
        raise KeyProblemError("No old key was given.")
    for old in old_keys:
        if old.same_secret_as(new_key):
            raise KeyProblemError(
                f"The new key ({new_key.source}) is the same as an old key ({old.source}). "
                "Generate a new one with: keyrotate generate-key --out FILE"
            )


def rotate_database(
    options: RotateOptions,
    *,
    progress: ProgressCallback | None = None,
    confirm: ConfirmCallback | None = None,
    notice: NoticeCallback | None = None,
) -> RotationReport:
    if _already_rotated(options):
        # data/.encryption_key already holds the new key (an earlier run got that far):
        # no old key is left, so this run only checks that the new key opens everything.
        options = dataclasses.replace(options, old_keys=())
    else:
        check_keys(options.old_keys, options.new_key)
    if options.key_file is not None and not options.dry_run:
        check_writable_directory(options.key_file.parent)
        check_replaceable(options.key_file)
    if options.backup_path is not None and not options.dry_run:
        refuse_existing_backup(options.backup_path)
    if not options.allow_running:
        refuse_if_open_elsewhere(options.db_path)
    keys = (*options.old_keys, options.new_key)
    with crypto_pool(options.db_path, keys, options.workers) as pool:
        hold = Hold(notice)  # signals wait from the COMMIT until the key file holds the new key
        try:
            report = _rotate(options, keys, pool, progress, confirm, notice, hold)
        except KeyboardInterrupt as interrupt:
            hold.release()
            raise Interrupted(signal_number(interrupt), stage=hold.stage) from None
        except BaseException:
            hold.release()
            raise
        signum = hold.release()
        if signum is not None:
            raise Interrupted(signum, stage=COMMITTED, report=report)
        return report


def _rotate(
    options: RotateOptions,
    keys: tuple[Key, ...],
    pool: CryptoPool | None,
    progress: ProgressCallback | None,
    confirm: ConfirmCallback | None,
    notice: NoticeCallback | None,
    hold: Hold,
) -> RotationReport:
    new_index = len(options.old_keys)
    conn, info = open_database(options.db_path, options.busy_timeout, for_writing=not options.dry_run)
    conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
    resolved = resolve_catalogue(info.schema, info.version)
    run = _Run(options, info, keys, tuple(resolved))
    backup: Path | None = None
    committed = False
    backup_job = None
    in_wal = conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    if options.backup_path is not None and not options.dry_run:
        backup_job = BackupJob(options.db_path, options.backup_path, in_background=in_wal)

    def take_backup() -> None:
        if backup_job is not None:
            backup_job.start()

    # Another writer that commits while this run waits for the lock may be a rotation to a key this run does not
    # know; then "the old key opens nothing" is about the race, not the key. (data_version moves on any commit by
    # another connection.)
    version_before = conn.execute("PRAGMA data_version").fetchone()[0]
    waited = False
    raced = False

    def on_wait() -> None:
        nonlocal waited
        waited = True
        if notice is not None:
            notice(f"Another program is writing to {options.db_path}; waiting up to {options.busy_timeout:g} s "
                   "for it to finish...")

    after_commit: list[str] = []
    try:
        with write_transaction(conn, options.db_path, on_wait=on_wait):
            raced = waited and conn.execute("PRAGMA data_version").fetchone()[0] != version_before
            hold.stage = ROLLED_BACK  # from here an interrupt rolls back
            if not options.dry_run:
                _remove_uncommitted_backups(options.db_path, notice)
            if confirm is not None and not options.dry_run:
                check = Scanner(conn, info, resolved, Keyring(keys), pool=pool, settled_key=new_index)
                check.run("check", progress)
                failures = _failures(conn, check.tallies)
                plan = _plan(check.tallies, resolved, new_index, options.encrypt_plaintext)
                _refuse_if_unopenable(plan, failures, options, keys)
                if not plan.has_work:
                    conn.execute("ROLLBACK")
                    return _nothing_to_do(run, check.tallies, failures, blocked=bool(plan.failed))
                if not confirm(plan):
                    raise CancelledError("Cancelled; nothing was written.")
            if notice is not None and not options.dry_run:
                notice("Writing now. If this run is interrupted (power cut, kill), run the same command again: "
                       "it finishes the job.")
            fingerprint = new_fingerprint()
            rewrite = Rewrite(new_index, Cipher(options.new_key, Scheme.API), options.encrypt_plaintext)
            if not options.dry_run:
                conn.execute("PRAGMA secure_delete = ON")
            # Values are checked as they are rewritten; the decision comes after the pass, before the commit.
            writer = Scanner(conn, info, resolved, Keyring(keys), fingerprint=fingerprint, rewrite=rewrite,
                             pool=pool, before_first_write=take_backup)
            if in_wal:
                writer.search_in_background(options.db_path)
            writer.run("rotate", progress)
            if backup_job is not None:
                backup = backup_job.wait()  # a finished, checked backup before any decision to commit
                if backup is not None:
                    crash_point("backup-done")
            failures = _failures(conn, writer.tallies)
            plan = _plan(writer.tallies, resolved, new_index, options.encrypt_plaintext)
            _refuse_if_unopenable(plan, failures, options, keys)
            revoked = revoke_tokens(conn, options.revoke)  # commits or rolls back with the rotation
            if options.dry_run:
                conn.execute("ROLLBACK")
                return dataclasses.replace(_report(run, writer.tallies, failures, committed=False), revoked=revoked)
            if not plan.has_work:
                conn.execute("ROLLBACK")
                return _nothing_to_do(run, writer.tallies, failures, blocked=bool(plan.failed))
            if options.audit_log:
                record_in_audit_log(conn, ROTATE_ENCRYPTION_KEY, {
                    "secrets_rotated": plan.to_rotate, "plaintext_encrypted": plan.to_encrypt,
                    "already_on_new_key": plan.already_new, "left_unopened": plan.failed,
                    **{f"revoked_{name}": n for name, n in revoked.items()}})
            crash_point("before-commit")
            hold.start("committing the rotation")
            if backup_job is not None:
                backup_job.committing()  # signals are held from here: no interrupt between this and COMMIT
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise translate_error(exc, options.db_path) from None
            committed = True
            hold.stage = COMMITTED
        hold.doing = "the rotation is committed; compacting the database and emptying its -wal"
        crash_point("after-commit")
        after_commit = _scrub_after_commit(conn, options)
        crash_point("after-checkpoint")
    except sqlite3.Error as exc:
        if not committed and backup_job is not None:
            backup_job.discard()
        error = translate_error(exc, options.db_path)
        raise error from None
    except WrongKeyError as error:
        if backup_job is not None:
            backup_job.discard()
        raise (_lost_lock_race(options) if raced else error) from None
    except BaseException:
        if not committed and backup_job is not None:
            backup_job.discard()  # nothing was written, so the copy only adds exposure
        raise
    finally:
        conn.close()

    # Tables where stray tokens were found and rewritten; the others hold none this rotation touched.
    found_outside = frozenset(t.table for t in writer.tallies.values() if not t.catalogued and any(t.opened_by))
    hold.doing = "the rotation is committed; checking every secret again on a fresh connection"
    _verify_after_commit(options, info, resolved, fingerprint, backup, progress, pool, found_outside)
    crash_point("after-verify")
    key_file_written, saved = None, _SavedKey()
    if options.key_file is not None:
        hold.doing = f"the rotation is committed and verified; writing the new key to {options.key_file}"
        saved = _replace_key_file(options, backup)
        key_file_written = str(options.key_file)
    return dataclasses.replace(_report(
        run, writer.tallies, failures, committed=True, backup=backup,
        key_file_written=key_file_written, verified=True, extra_warnings=after_commit, saved=saved,
    ), revoked=revoked)


@dataclass(frozen=True)
class _SavedKey:
    path: Path | None = None  # where the old key was saved
    key_file_to_restore: Path | None = None  # the key file a restore puts back (None: no key part)


def _replace_key_file(options: RotateOptions, backup: Path | None) -> _SavedKey:
    """Save the old key (unless told not to), then write the new one: the old key is never lost."""
    key_file = options.key_file
    assert key_file is not None
    existed = os.path.lexists(key_file)
    saved = None
    if options.save_old_key:
        try:
            saved = save_old_key(key_file, options.new_key, options.db_path, backup)
        except (OSError, UnicodeDecodeError, KeyrotateError) as exc:
            reason = exc.message if isinstance(exc, KeyrotateError) else str(exc)
            raise CannotWriteError(
                f"The database is rotated and verified, but saving the old key from {key_file} before replacing "
                f"it failed ({reason}); {key_file} still holds the old key. Fix that (free space?) and run the same "
                "command again: it finishes the job."
            ) from None
    write_key_file(key_file, options.new_key, backup, options.db_path)
    return _SavedKey(saved, key_file if saved is not None or not existed else None)


def _remove_uncommitted_backups(db: Path, notice: NoticeCallback | None) -> None:
    """Runs stopped before their COMMIT each left a full copy of a database they never changed."""
    for backup in remove_leftovers(db):
        if notice is not None:
            notice(f"Removed {backup}: the backup of an earlier run that stopped before its commit, so the database "
                   "still holds everything it held. This run makes its own backup.")


def _lost_lock_race(options: RotateOptions) -> DatabaseBusyError:
    return DatabaseBusyError(
        f"While keyrotate waited for the lock on {options.db_path}, another program committed changes to it, and "
        "now none of its secrets opens under the old or the new key: probably another rotation ran at the same "
        "time. Nothing was written by this run. Stop TREK and any other keyrotate run, then find the key the "
        "database is under with `keyrotate verify --key-file FILE`."
    )


def _already_rotated(options: RotateOptions) -> bool:
    """The only old key given is the new key, and the key file already holds it."""
    if options.key_file is None or not options.old_keys:
        return False
    if not all(old.same_secret_as(options.new_key) for old in options.old_keys):
        return False
    return _key_file_holds(options.key_file, options.new_key)


def _key_file_holds(path: Path, key: Key) -> bool:
    try:
        on_disk = js_trim(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False
    return bool(on_disk) and key.same_secret_as(Key(on_disk, "key file"))


def _nothing_to_do(run: _Run, tallies: dict[str, Tally], failures: tuple[FailedSecret, ...], *,
                   blocked: bool) -> RotationReport:
    """No value is under an old key (a rerun after a crash between the commit and the key file,
    or a database with no secrets yet): the key file must follow, unless some secret opens under
    no key at all."""
    options = run.options
    notes = []
    written, saved = None, _SavedKey()
    if (options.key_file is not None and not options.dry_run and not blocked
            and not _key_file_holds(options.key_file, options.new_key)):
        saved = _replace_key_file(options, None)
        written = str(options.key_file)
        notes.append("No secret was under the old key any more: an earlier run probably stopped after its commit.")
    elif not options.old_keys:
        notes.append(f"{options.key_file} already holds the new key and every secret opens under it: nothing to do.")
    return _report(run, tallies, failures, committed=False, key_file_written=written, notes=notes, saved=saved)


def _scrub_after_commit(conn: sqlite3.Connection, options: RotateOptions) -> list[str]:
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


def verify_database(
    db_path: Path,
    keys: Sequence[Key],
    *,
    busy_timeout: float = 10.0,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Read-only: which of ``keys`` opens each secret."""
    if not keys:
        raise KeyProblemError("No key was given to verify.")
    with crypto_pool(db_path, keys, workers) as pool, read_session(db_path, busy_timeout) as session:
        scanner = Scanner(session.conn, session.info, session.resolved, Keyring(keys), pool=pool)
        scanner.run("verify", progress)
        failures = _failures(session.conn, scanner.tallies)
    return VerifyReport(
        database=str(db_path),
        trek_version=session.info.version.evidence,
        key_sources=tuple(k.source for k in keys),
        locations=_locations(session.resolved, scanner.tallies),
        failures=failures,
    )


def _plan(
    tallies: dict[str, Tally], resolved: Sequence[ResolvedLocation], new_index: int, encrypt_plaintext: bool
) -> RotationPlan:
    to_rotate = sum(sum(t.opened_by[:new_index]) for t in tallies.values())
    already = sum(t.opened_by[new_index] for t in tallies.values())
    failed = sum(t.unopened for t in tallies.values() if t.catalogued)
    to_encrypt = sum(t.encryptable_plaintext for t in tallies.values()) if encrypt_plaintext else 0
    return RotationPlan(to_rotate, to_encrypt, already, failed, _locations(resolved, tallies))


def _refuse_if_unopenable(
    plan: RotationPlan, failures: tuple[FailedSecret, ...], options: RotateOptions, keys: Sequence[Key]
) -> None:
    if not plan.failed:
        return
    total = plan.to_rotate + plan.already_new + plan.failed
    if not options.old_keys:
        raise KeyProblemError(
            f"{options.key_file} already holds the new key, but it opens only {plan.already_new} of {total} secrets. "
            "Give the key the others are under with --old-key-file. Nothing was written."
        )
    if plan.to_rotate == 0 and plan.already_new == 0:
        sources = ", ".join(k.source for k in options.old_keys)
        raise WrongKeyError(
            f"The old key ({sources}) opens 0 of {total} secrets, and neither does the new key. "
            "Check that it is the key TREK is running with (data/.encryption_key, or ENCRYPTION_KEY in TREK's "
            "environment). Nothing was written."
        )
    if options.skip_undecryptable:
        return
    listed = "\n".join(f"  - {line}" for _, line in
                       summarise_failures([f for f in failures if f.catalogued], unopened_by_label(plan.locations)))
    raise UndecryptableError(
        f"{plan.failed} of {total} secrets open under none of the given keys (or sit where keyrotate cannot rewrite "
        "them), so nothing was written:\n"
        f"{listed}\n"
        "If another old key exists (for example after an interrupted rotation), give it too "
        "(--old-key-file may be repeated). To rotate everything else and leave these values as they are, "
        "add --skip-undecryptable."
    )


def _failures(conn: sqlite3.Connection, tallies: dict[str, Tally]) -> tuple[FailedSecret, ...]:
    """Name each failing value by its row's identifying columns (never its content): one query per location."""
    identities = {(loc.table, loc.column): loc.identity for loc in CATALOGUE}
    out = []
    for tally in tallies.values():
        if not tally.failures:
            continue
        columns = identities.get((tally.table, tally.column), ("rowid",))
        select = ", ".join(quote_identifier(c) if c != "rowid" else "rowid" for c in columns)
        rowids = sorted({failure.rowid for failure in tally.failures})
        try:
            rows = conn.execute(
                f"SELECT rowid, {select} FROM {quote_identifier(tally.table)} "
                f"WHERE rowid IN ({', '.join('?' * len(rowids))})", rowids,
            ).fetchall()
        except sqlite3.Error:
            rows = []
        found = {row[0]: dict(zip(columns, row[1:], strict=True)) for row in rows}
        for failure in tally.failures:
            identity = found.get(failure.rowid, {"rowid": failure.rowid})
            out.append(FailedSecret(tally.label, failure.table, failure.column, identity, failure.path, failure.reason,
                                    tally.catalogued))
    return tuple(out)


def _locations(resolved: Sequence[ResolvedLocation], tallies: dict[str, Tally]) -> tuple[LocationResult, ...]:
    out = []
    for entry in resolved:
        loc = entry.location
        if entry.presence is not Presence.ACTIVE:
            out.append(LocationResult(loc.label, loc.table, loc.column, True, entry.presence.value, entry.reason))
    for tally in tallies.values():
        if not tally.catalogued and not (sum(tally.opened_by) or tally.unopened):
            continue
        out.append(
            LocationResult(
                tally.label, tally.table, tally.column, tally.catalogued,
                opened_by=tuple(tally.opened_by), rewritten=tally.rewritten, plaintext=tally.plaintext,
                encrypted_plaintext=tally.encrypted_plaintext, empty=tally.empty, unopened=tally.unopened,
            )
        )
    return tuple(out)


def _verify_after_commit(
    options: RotateOptions,
    info: DatabaseInfo,
    resolved: Sequence[ResolvedLocation],
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
    fingerprint = Fingerprint(expected.salt)
    try:
        with closing(connect(options.db_path, busy_timeout=options.busy_timeout)) as conn, snapshot(conn):
            scanner = Scanner(conn, info, resolved, Keyring((options.new_key, *options.old_keys)),
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


def check_writable_directory(directory: Path) -> None:
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        raise CannotWriteError(f"Cannot write the new key file into {directory}. Nothing was changed.")


def write_key_file(path: Path, key: Key, backup: Path | None, db_path: Path) -> None:
    """Atomically replace ``path`` with the key (mode 0600, fsynced, never through a link).

    Run as root, the file keeps its owner (or gets the database's): a root-owned 0600
    key file is one TREK's user cannot read, and TREK then silently falls back to .jwt_secret.
    """
    try:
        with replacing(path, owner_like=path if path.is_file() else db_path) as (_partial, handle):
            handle.write(key.reveal().encode("utf-8"))
            handle.flush()
            crash_point("key-file-temp")
        crash_point("key-file-renamed")
    except (OSError, CannotWriteError) as exc:
        reason = exc.message if isinstance(exc, CannotWriteError) else exc.strerror
        raise CannotWriteError(
            f"The database is rotated and verified, but writing the new key to {path} failed ({reason}). "
            f"Put the new key into {path} yourself (mode 600) before starting TREK, or TREK will not be able to "
            "read its secrets."
            + (f" The backup {backup} still opens with the old key." if backup else "")
        ) from None


def _report(
    run: _Run,
    tallies: dict[str, Tally],
    failures: tuple[FailedSecret, ...],
    *,
    committed: bool,
    backup: Path | None = None,
    key_file_written: str | None = None,
    verified: bool = False,
    notes: Sequence[str] = (),
    extra_warnings: Sequence[str] = (),
    saved: _SavedKey = _SavedKey(),
) -> RotationReport:
    options = run.options
    warnings = list(extra_warnings)
    skipped = [f for f in failures if f.catalogued]
    if skipped and options.skip_undecryptable:
        warnings.append(
            f"{len(skipped)} catalogued secret(s) open under no key and were LEFT UNTOUCHED "
            "(--skip-undecryptable). TREK will read them as 'not set'."
        )
    steps = []
    if key_file_written and not committed:
        steps.append(f"nothing needed re-encrypting; {key_file_written} now holds the new key")
    if (committed or key_file_written) and options.key_file is not None:
        steps.append(
            "if TREK's environment sets ENCRYPTION_KEY (docker-compose.yml, .env, systemd unit), change it to the "
            "new key or remove it before restarting TREK; otherwise TREK puts the old key back"
        )
    elif committed:
        steps.append(
            "give TREK the new key: write it to data/.encryption_key and change or remove ENCRYPTION_KEY in "
            "TREK's environment, then restart TREK"
        )
    return RotationReport(
        database=str(options.db_path),
        trek_version=run.info.version.evidence,
        key_sources=tuple(k.source for k in run.keys),
        dry_run=options.dry_run,
        committed=committed,
        locations=_locations(run.resolved, tallies),
        failures=failures,
        backup=str(backup) if backup else None,
        restore_command=(restore_command(backup, options.db_path, saved.key_file_to_restore, saved.path)
                         if backup else None),
        old_key_saved=str(saved.path) if saved.path else None,
        key_file_written=key_file_written,
        verified_after_commit=verified,
        warnings=tuple(warnings),
        notes=tuple(notes),
        next_steps=tuple(steps),
    )


