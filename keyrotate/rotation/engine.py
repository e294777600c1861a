"""The rotation: one write transaction from the lock to the COMMIT, then the proof and the new key file.

Order of work in :func:`rotate_database`: the checks before opening (:func:`preflight`), the write lock, then one
pass that checks every value opens, re-encrypts it and decrypts the new value again before writing it (the backup
starts just before the first write, in WAL mode beside the pass; its check of the copy, or without a backup SQLite's
integrity check of the database, must pass before the commit), then the decision (:func:`decide`): roll everything
back if a catalogued secret did not open (unless --skip-undecryptable), on a dry run, or when nothing moved (then
only the key file may need the new key); otherwise commit, compact, reopen the database on a fresh connection (in
WAL mode beside the VACUUM) to prove the texts on disk are the checked ones, and write the key file (--data-dir).
When someone must confirm the plan first, a read-only check pass runs before the rotation pass. Nothing here
prints; progress goes to a callback and the outcome comes back as a report.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from keyrotate.crashpoints import crash_point
from keyrotate.errors import CancelledError, KeyrotateError, WrongKeyError
from keyrotate.interrupts import COMMITTED, ROLLED_BACK, Hold, Interrupted, signal_number
from keyrotate.rotation.after_commit import ReadBack, committed_elsewhere, scrub_after_commit, verify_after_commit
from keyrotate.rotation.failures import FailedSecret
from keyrotate.rotation.key_file import finish_earlier_rotation, replace_key_file
from keyrotate.rotation.options import NoticeCallback, RotateOptions, key_file_holds, preflight
from keyrotate.rotation.outcome import Finished, RunFacts, SavedKey, rotation_report
from keyrotate.rotation.plan import ConfirmCallback, RotationPlan, decide, lost_lock_race
from keyrotate.rotation.report import RotationReport
from keyrotate.rotation.revoke import revoke_tokens
from keyrotate.rotation.scanning import ProgressCallback, Scanner
from keyrotate.rotation.session import damage_first, open_database
from keyrotate.rotation.stored import StoredDigest, loose_labels
from keyrotate.rotation.tallies import Tally
from keyrotate.rotation.values import Rewrite
from keyrotate.rotation.workers import CryptoPool, crypto_pool
from keyrotate.store.backup import BackupJob
from keyrotate.store.database import WRITE_CACHE_KIB, data_version, translate_error, write_transaction
from keyrotate.store.processes import refuse_if_open_elsewhere
from keyrotate.store.uncommitted import remove_leftovers
from keyrotate.trek.audit_log import ROTATE_ENCRYPTION_KEY, record_in_audit_log
from keyrotate.trek.catalogue import resolve_catalogue
from keyrotate.trek.formats import Keyring
from keyrotate.trek.keys import Key


@dataclass(frozen=True)
class _Callbacks:
    progress: ProgressCallback | None
    confirm: ConfirmCallback | None
    notice: NoticeCallback | None


@dataclass(frozen=True)
class _Written:
    """What the committed transaction leaves for the steps after it."""

    writer: Scanner
    stored: StoredDigest
    failed: tuple[FailedSecret, ...]
    revoked: dict[str, int]
    backup: Path | None
    warnings: tuple[str, ...] = ()
    read_back: ReadBack | None = None  # the proof's reading, done alongside the VACUUM

    def found_outside(self) -> frozenset[str]:
        """Tables where stray tokens opened (rewritten or already new): outside the catalogue, it wrote to no other."""
        return frozenset(t.table for t in self.writer.tallies.values() if not t.catalogued and any(t.opened_by))


def rotate_database(options: RotateOptions, *, progress: ProgressCallback | None = None,
                    confirm: ConfirmCallback | None = None, notice: NoticeCallback | None = None) -> RotationReport:
    """Rotate ``options.db_path`` to ``options.new_key``; :class:`Interrupted` says how far a signal let it get."""
    options = preflight(options)
    keys = (*options.old_keys, options.new_key)
    with crypto_pool(options.db_path, keys, options.workers) as pool:
        hold = Hold(notice)  # signals wait from the COMMIT until the key file holds the new key
        try:
            report = _Rotation(options, keys, pool, _Callbacks(progress, confirm, notice), hold).run()
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


class _Rotation:
    """One rotation's named steps, from the open database to the report, and the state they share."""

    def __init__(self, options: RotateOptions, keys: tuple[Key, ...], pool: CryptoPool | None,
                 calls: _Callbacks, hold: Hold) -> None:
        self.options, self.keys, self.pool, self.calls, self.hold = options, keys, pool, calls, hold
        self.new_index = len(options.old_keys)
        self.conn, info, self.integrity = open_database(options.db_path, options.busy_timeout,
                                                        for_writing=not options.dry_run, backup_checks=bool(
                                                            options.backup_path and not options.dry_run))
        self.facts = RunFacts(options, info, keys, tuple(resolve_catalogue(info.schema, info.version)))
        self.backup_job: BackupJob | None = None
        self.backup: Path | None = None
        self.in_wal = False
        self.committed = False
        self.waited = False
        self.raced = False
        self.version_before = 0
        self.version_committed = 0

    def run(self) -> RotationReport:
        try:
            written = self._transaction()
            return written if isinstance(written, RotationReport) else self._after_commit(written)
        except KeyrotateError as error:
            error.committed = error.committed or self.committed  # past the COMMIT the secrets need the new key
            raise

    def _transaction(self) -> RotationReport | _Written:
        """Everything on the write connection: the early endings, or the commit and the scrub after it."""
        try:
            with damage_first(self.integrity):  # its verdict comes before the COMMIT (see _prepare)
                self._prepare()
                with write_transaction(self.conn, self.options.db_path, on_wait=self._on_wait):
                    outcome = self._inside_transaction()
            return outcome if isinstance(outcome, RotationReport) else self._scrub(outcome)
        except sqlite3.Error as exc:
            self._discard_backup()
            raise translate_error(exc, self.options.db_path) from None
        except WrongKeyError as error:
            self._discard_backup()
            raise (lost_lock_race(self.options) if self.raced else error) from None
        except BaseException:
            self._discard_backup()  # nothing was written, so the copy only adds exposure
            raise
        finally:
            self.integrity.stop()
            self.conn.close()

    def _scrub(self, written: _Written) -> _Written:
        """Past the COMMIT, on its connection: compact and empty the -wal (in WAL mode, the proof reads beside it)."""
        self.hold.doing = "the rotation is committed; compacting the database and emptying its -wal"
        crash_point("after-commit")
        read_back = None
        if self.in_wal and self.options.vacuum:  # in rollback mode a reader would hold up the VACUUM's commit
            self.hold.doing += " while reading every secret back on a fresh connection"
            read_back = ReadBack(self.facts, written.stored, self.calls.progress, written.found_outside())
        warnings = scrub_after_commit(self.conn, self.options, read_back)
        crash_point("after-checkpoint")
        if read_back is not None and committed_elsewhere(self.conn, self.version_committed):
            read_back = None  # it may have read before that commit: all is read again after it
        return replace(written, warnings=tuple(warnings), read_back=read_back)

    def _prepare(self) -> None:
        self.conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
        self.in_wal = self.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        if not self.in_wal:  # writes go to the file itself: refuse a damaged one first. In WAL mode nothing
            self.integrity.wait()  # reaches it before the COMMIT, so the check runs beside the pass
        if self.options.backup_path is not None and not self.options.dry_run:
            self.backup_job = BackupJob(self.options.db_path, self.options.backup_path, in_background=self.in_wal)
        # Another writer that commits while this run waits for the lock may be a rotation to a key this run does
        # not know; then "the old key opens nothing" is about the race, not the key. (data_version moves on any
        # commit by another connection.)
        self.version_before = data_version(self.conn)

    def _on_wait(self) -> None:
        self.waited = True
        if self.calls.notice is not None:
            self.calls.notice(f"Another program is writing to {self.options.db_path}; waiting up to "
                              f"{self.options.busy_timeout:g} s for it to finish...")

    def _inside_transaction(self) -> RotationReport | _Written:
        options, calls = self.options, self.calls
        self.raced = self.waited and data_version(self.conn) != self.version_before
        self.hold.stage = ROLLED_BACK  # from here an interrupt rolls back
        if not options.dry_run:
            _remove_uncommitted_backups(options.db_path, calls.notice)
        if calls.confirm is not None and not options.dry_run:
            stopped = self._check_then_confirm(calls.confirm)
            if stopped is not None:
                return stopped
        if calls.notice is not None and not options.dry_run:
            calls.notice("Writing now. If this run is interrupted (power cut, kill), run the same command again: "
                         "it finishes the job.")
        writer, stored = self._rewrite_pass()
        plan, failed = decide(self.conn, writer.tallies, self.facts.resolved, self.new_index, options)
        revoked = revoke_tokens(self.conn, options.revoke)  # commits or rolls back with the rotation
        if options.dry_run:
            self.conn.execute("ROLLBACK")
            return rotation_report(self.facts, writer.tallies, failed, Finished(committed=False, revoked=revoked))
        if not plan.has_work and not any(revoked.values()):
            self.conn.execute("ROLLBACK")
            return self._nothing_to_do(writer.tallies, failed, blocked=bool(plan.failed), revoked=revoked)
        self._commit(plan, revoked)
        return _Written(writer, stored, failed, revoked, self.backup)

    def _check_then_confirm(self, confirm: ConfirmCallback) -> RotationReport | None:
        """A read-only pass first, so the person at the keyboard sees the plan before anything is written."""
        check = Scanner(self.conn, self.facts.info, self.facts.resolved, Keyring(self.keys), pool=self.pool,
                        settled_key=self.new_index)
        check.run("check", self.calls.progress)
        plan, failed = decide(self.conn, check.tallies, self.facts.resolved, self.new_index, self.options)
        if not plan.has_work and not self.options.revoke.asked:  # tokens to revoke are only counted when deleted
            self.conn.execute("ROLLBACK")
            return self._nothing_to_do(check.tallies, failed, blocked=bool(plan.failed))
        self.integrity.wait()  # a damaged database is refused before anyone is asked
        if not confirm(plan):
            raise CancelledError("Cancelled; nothing was written.")
        return None

    def _rewrite_pass(self) -> tuple[Scanner, StoredDigest]:
        """Re-encrypt every value under an old key, each checked as it is rewritten; the backup is finished after."""
        options = self.options
        # The text every secret location holds once committed.
        stored = StoredDigest(loose=loose_labels(self.facts.info, self.facts.resolved))
        rewrite = Rewrite(self.new_index, options.encrypt_plaintext)
        if not options.dry_run:
            self.conn.execute("PRAGMA secure_delete = ON")
        # Values are checked as they are rewritten; the decision comes after the pass, before the commit.
        writer = Scanner(self.conn, self.facts.info, self.facts.resolved, Keyring(self.keys), stored=stored,
                         rewrite=rewrite, pool=self.pool, before_first_write=self._take_backup)
        if self.in_wal:  # other connections see the database as it was before this transaction
            writer.read_elsewhere(options.db_path)
        writer.run("rotate", self.calls.progress)
        if options.revoke.asked:
            self._take_backup()  # tokens are deleted next, even when no secret was rewritten
        if self.backup_job is not None:
            self.backup = self.backup_job.wait()  # a finished, checked backup before any decision to commit
            if self.backup is not None:
                self.integrity.covered()  # the copy's check is of the very pages this transaction read
                crash_point("backup-done")
        return writer, stored

    def _take_backup(self) -> None:
        if self.backup_job is not None and not self.backup_job.started:
            self.backup_job.start()

    def _discard_backup(self) -> None:
        if not self.committed and self.backup_job is not None:
            self.backup_job.discard()

    def _commit(self, plan: RotationPlan, revoked: dict[str, int]) -> None:
        if self.options.audit_log:
            record_in_audit_log(self.conn, ROTATE_ENCRYPTION_KEY, {
                "secrets_rotated": plan.to_rotate, "plaintext_encrypted": plan.to_encrypt,
                "already_on_new_key": plan.already_new, "left_unopened": plan.failed,
                **{f"revoked_{name}": n for name, n in revoked.items()}})
        self.integrity.wait()
        crash_point("before-commit")
        if not self.options.allow_running:  # a TREK started meanwhile would write under the old key after the COMMIT
            refuse_if_open_elsewhere(self.options.db_path)  # (the crypto workers have closed their reads by now)
        self.hold.start("committing the rotation")
        if self.backup_job is not None:
            self.backup_job.committing()  # signals are held from here: no interrupt between this and COMMIT
        self.version_committed = data_version(self.conn)  # no other connection can commit inside this transaction
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate_error(exc, self.options.db_path) from None
        self.committed = True
        self.hold.stage = COMMITTED

    def _after_commit(self, written: _Written) -> RotationReport:
        """The proof on a fresh connection, then the new key into the key file."""
        options = self.options
        self.hold.doing = "the rotation is committed; reading every secret back on a fresh connection"
        verify_after_commit(self.facts, written.stored, written.backup, self.calls.progress, written.found_outside(),
                            written.read_back)
        crash_point("after-verify")
        key_file_written, saved = None, SavedKey()
        if options.key_file is not None:
            self.hold.doing = f"the rotation is committed and verified; writing the new key to {options.key_file}"
            saved = replace_key_file(options, options.key_file, written.backup)
            key_file_written = str(options.key_file)
        return rotation_report(self.facts, written.writer.tallies, written.failed, Finished(
            committed=True, backup=written.backup, key_file_written=key_file_written, verified=True,
            warnings=written.warnings, saved=saved, revoked=written.revoked))

    def _nothing_to_do(self, tallies: dict[str, Tally], failed: tuple[FailedSecret, ...], *, blocked: bool,
                       revoked: dict[str, int] | None = None) -> RotationReport:
        """No value is under an old key (a rerun after a crash between the commit and the key file,
        or a database with no secrets yet): the key file must follow, unless some secret opens under
        no key at all."""
        options = self.options
        self.integrity.wait()  # before the key file is touched
        self._discard_backup()  # taken for a revocation that found nothing to delete
        notes = []
        written, saved, backup = None, SavedKey(), None
        if (options.key_file is not None and not options.dry_run and not blocked
                and not key_file_holds(options.key_file, options.new_key)):
            saved, backup = finish_earlier_rotation(options, options.key_file)
            written = str(options.key_file)
            notes.append("No secret was under the old key any more (an earlier rotation moved them: a keyrotate run "
                         "stopped after its commit, or TREK's own script); the key file now holds the new key.")
        elif not options.old_keys:
            notes.append(f"{options.key_file} already holds the new key and every secret opens under it: nothing to do.")
        return rotation_report(self.facts, tallies, failed, Finished(
            committed=False, backup=backup, key_file_written=written, notes=tuple(notes), saved=saved, revoked=revoked))


def _remove_uncommitted_backups(db: Path, notice: NoticeCallback | None) -> None:
    """Runs stopped before their COMMIT each left a full copy of a database they never changed."""
    for backup in remove_leftovers(db):
        if notice is not None:
            notice(f"Removed {backup}: the backup of an earlier run that stopped before its commit, so the database "
                   "still holds everything it held. This run makes its own backup.")

