"""Handing the new key to TREK after the commit: the old key saved first, then the new one written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from keyrotate.crashpoints import crash_point
from keyrotate.errors import CannotWriteError, InterruptedAfterCommitError, KeyrotateError
from keyrotate.rotation.old_key import earlier_backup, save_old_key
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.outcome import SavedKey
from keyrotate.store.files import replacing
from keyrotate.trek.keys import Key


def replace_key_file(options: RotateOptions, key_file: Path, backup: Path | None) -> SavedKey:
    """Save the old key (unless told not to), then write the new one: the old key is never lost."""
    existed = os.path.lexists(key_file)
    saved = None
    if options.save_old_key:
        try:
            saved = save_old_key(key_file, options.new_key, options.db_path, backup, options.fallback_key_file)
        except (OSError, UnicodeDecodeError, KeyrotateError) as exc:
            reason = exc.message if isinstance(exc, KeyrotateError) else str(exc)
            raise InterruptedAfterCommitError(
                f"The database is rotated and verified, but saving the old key from {key_file} before replacing "
                f"it failed ({reason}); {key_file} still holds the old key. Fix that (free space?) and run the same "
                "command again: it finishes the job."
            ) from None
    write_key_file(key_file, options.new_key, backup, options.db_path)
    return SavedKey(saved, key_file if saved is not None or not existed else None)


def finish_earlier_rotation(options: RotateOptions, key_file: Path) -> tuple[SavedKey, Path | None]:
    """A rerun after a run stopped between its COMMIT and the key file: the new key into ``key_file``, the old
    key saved beside that run's backup when it is found (returned too: the restore line puts both back)."""
    backup = earlier_backup(options, key_file)
    return replace_key_file(options, key_file, backup), backup


def write_key_file(path: Path, key: Key, backup: Path | None, db_path: Path) -> None:
    """Atomically replace ``path`` with the key (fsynced, never through a link).

    Run as root, the file keeps its owner, group and mode: a key file TREK's user cannot read makes TREK
    silently fall back to .jwt_secret. A new one takes them from the .jwt_secret TREK read its key from until
    now (it may read it through its group), else gets the database's owner and mode 0600.
    """
    fallback = path.parent / ".jwt_secret"
    model = path if path.is_file() else fallback if fallback.is_file() and not fallback.is_symlink() else None
    try:
        with replacing(path, owner_like=model or db_path, mode_like=model) as (_partial, handle):
            handle.write(key.reveal().encode("utf-8"))
            handle.flush()
            crash_point("key-file-temp")
        crash_point("key-file-renamed")
    except (OSError, CannotWriteError) as exc:
        reason = exc.message if isinstance(exc, CannotWriteError) else exc.strerror
        raise InterruptedAfterCommitError(
            f"The database is rotated and verified, but writing the new key to {path} failed ({reason}); TREK "
            f"cannot read its secrets until {path} holds the new key. Fix that (free space?) and run the same "
            "command again: it finishes the job."
            + (f" The backup {backup} still opens with the old key." if backup else "")
        ) from None
