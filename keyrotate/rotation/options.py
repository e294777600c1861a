"""What a rotation is asked to do, and the checks made before its database is opened."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyrotate.errors import CannotWriteError, KeyProblemError
from keyrotate.rotation.revoke import Revocation
from keyrotate.store.backup import refuse_linked_backup
from keyrotate.store.files import check_replaceable
from keyrotate.store.processes import refuse_if_open_elsewhere
from keyrotate.trek.keys import Key, js_trim, refuse_unreadable_new_key

NoticeCallback = Callable[[str], None]  # one line for the person running keyrotate


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
    # .jwt_secret when this run replaces it afterwards: with key_file missing, TREK's old key is read there
    # and saved, so a restore can put it into key_file instead of leaving TREK on the replaced fallback.
    fallback_key_file: Path | None = None
    revoke: Revocation = Revocation()  # plaintext bearer tokens to remove in the same transaction


def preflight(options: RotateOptions) -> RotateOptions:
    """Refuse what cannot work before anything is opened; the options this run really uses."""
    if already_rotated(options):
        # data/.encryption_key already holds the new key (an earlier run got that far):
        # no old key is left, so this run only checks that the new key opens everything.
        options = dataclasses.replace(options, old_keys=())
    else:
        check_keys(options.old_keys, options.new_key)
    if options.key_file is not None and not options.dry_run:
        check_writable_directory(options.key_file.parent)
        check_replaceable(options.key_file)
    if options.backup_path is not None and not options.dry_run:
        # A file already at that name is refused when the backup is made (BackupJob.start): a rerun that finds
        # nothing left to rotate makes none, and must finish the job when given the same command, --backup and all.
        refuse_linked_backup(options.backup_path)
    if not options.allow_running:
        refuse_if_open_elsewhere(options.db_path)
    return options


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


def check_writable_directory(directory: Path) -> None:
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        raise CannotWriteError(f"Cannot write the new key file into {directory}. Nothing was changed.")


def already_rotated(options: RotateOptions) -> bool:
    """The only old key given is the new key, and the key file already holds it."""
    if options.key_file is None or not options.old_keys:
        return False
    if not all(old.same_secret_as(options.new_key) for old in options.old_keys):
        return False
    return key_file_holds(options.key_file, options.new_key)


def key_file_holds(path: Path, key: Key) -> bool:
    try:
        on_disk = js_trim(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False
    return bool(on_disk) and key.same_secret_as(Key(on_disk, "key file"))
