"""The keys around a rotation: a new key generated first, the old key saved and found again, the shell's key.

A generated key is written to its file (new, 0600, fsynced) before anything
else happens, so no crash can leave a database under a key that exists
nowhere.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from keyrotate.crashpoints import crash_point
from keyrotate.errors import KeyrotateError
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.verify import verify_database
from keyrotate.store.files import write_new_file
from keyrotate.trek.keys import Key, TrekKeyResolution, create_key_file, generate_key_text, js_trim


def generate_new_key(out: Path) -> Key:
    """A new random key, already safe on disk at ``out`` when this returns."""
    text = generate_key_text()
    create_key_file(out, text)
    crash_point("after-new-key")
    return Key(text, f"new key generated into {out}")


def committed_under(db_path: Path, key: Key, old_keys: Sequence[Key], *, busy_timeout: float) -> bool:
    """Whether a rotation to ``key`` already committed: some secret opens under it and none under an old key.

    For a rerun of ``--generate-new-key`` that finds its key file written by an earlier run, killed after its
    commit (read-only; a database without secrets does not count).
    """
    others = [k for k in old_keys if not k.same_secret_as(key)]
    report = verify_database(db_path, [key, *others], busy_timeout=busy_timeout)
    opened = [loc.opened_by for loc in report.locations if loc.opened_by]
    return sum(counts[0] for counts in opened) > 0 and not any(sum(counts[1:]) for counts in opened)


def save_old_key(key_file: Path, new_key: Key, db_path: Path, backup: Path | None,
                 fallback: Path | None = None) -> Path | None:
    """Before ``key_file`` is replaced, keep the key TREK reads from it (its trimmed text).

    Saved as ``<backup>.key`` beside the backup it opens, or without a backup as
    ``travel.db.keyrotate-oldkey-<time>.key``: new, 0600, owned like the key file,
    fsynced. None when the file is missing or already holds the new key. A key an
    earlier, interrupted run saved already is not saved twice. ``fallback``: the file
    TREK reads while ``key_file`` is missing (``.jwt_secret``), when this run replaces
    it too; its key is then the one saved.
    """
    found = _key_before(key_file, fallback)
    if found is None or found[0].same_secret_as(new_key):
        return None
    old, source = found
    text = old.reveal()
    for saved, key in _saved_keys(db_path):
        if old.same_secret_as(key):
            return saved
    if backup is not None and not os.path.lexists(f"{backup}.key"):
        path = Path(f"{backup}.key")
    else:  # no backup, or something (a planted link?) already holds that name
        base = f"{db_path.name}.keyrotate-oldkey-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        path, n = db_path.with_name(f"{base}.key"), 1
        while os.path.lexists(path):
            n += 1
            path = db_path.with_name(f"{base}-{n}.key")
    write_new_file(path, text.encode("utf-8"), owner_like=source)
    return path


def _key_before(key_file: Path, fallback: Path | None) -> tuple[Key, Path] | None:
    """The key TREK reads now (``key_file``, else ``fallback`` when given) and the file it is in; None if empty."""
    for source in (key_file, fallback):
        if source is None:
            continue
        try:
            text = js_trim(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        return (Key(text, f"old key from {source}"), source) if text else None
    return None


def earlier_backup(options: RotateOptions, key_file: Path) -> Path | None:
    """The backup of an earlier run stopped after its commit, before it saved the old key, so the old key can
    join it: the --backup PATH given, else keyrotate's newest backup next to the database, if its secrets open
    under the key TREK reads now.

    Backups of runs that never committed are removed before this is asked; None when nothing fits, or when
    the old key is not to be saved (--discard-old-key).
    """
    db_path = options.db_path
    try:  # an unreadable key file is for replace_key_file to report
        found = _key_before(key_file, options.fallback_key_file) if options.save_old_key else None
    except (OSError, UnicodeDecodeError):
        return None
    given = options.backup_path  # a rerun with --backup PATH: that run's backup is there
    newest = given if given is not None and given.is_file() and not given.is_symlink() else newest_backup(db_path)
    if found is None or newest is None:
        return None
    try:
        opened = verify_database(newest, [found[0]], busy_timeout=options.busy_timeout).opened_by_first
    except (KeyrotateError, sqlite3.Error, OSError):
        return None
    return newest if opened else None


# What sits beside a copy of the database without being one: its SQLite side files, the keys saved with it.
NOT_A_COPY = ("-wal", "-shm", "-journal", ".key", ".jwt_secret")


def copies_beside(db_path: Path, pattern: str) -> list[Path]:
    """The names next to ``db_path`` matching ``<db name><pattern>`` that may be copies of it (sorted)."""
    return [path for path in sorted(db_path.parent.glob(db_path.name + pattern)) if not path.name.endswith(NOT_A_COPY)]


def newest_backup(db_path: Path) -> Path | None:
    """keyrotate's newest backup of ``db_path`` next to it (``travel.db.keyrotate-backup-<time>``), or None."""
    backups = []
    for path in copies_beside(db_path, ".keyrotate-backup-*"):
        if path.is_symlink():
            continue
        with suppress(OSError):
            if path.is_file():
                backups.append((path.stat().st_mtime, path))
    return max(backups)[1] if backups else None


def _saved_keys(db_path: Path) -> list[tuple[Path, Key]]:
    """Old keys keyrotate saved next to the database, newest first; unreadable ones are skipped."""
    found = []
    for path in db_path.parent.glob(f"{db_path.name}.keyrotate-*.key"):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            text = js_trim(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            found.append((mtime, path, Key(text, f"old key saved in {path}")))
    return [(path, key) for _, path, key in sorted(found, key=lambda item: item[0], reverse=True)]


def saved_old_keys(db_path: Path) -> list[Key]:
    return [key for _, key in _saved_keys(db_path)]


def fallback_explanation(resolution: TrekKeyResolution, *, jwt_secret_replaced: bool = False) -> str | None:
    """Why an install on the ``.jwt_secret`` fallback matters, or None for a normal one.

    ``jwt_secret_replaced``: this run replaces ``.jwt_secret`` too (``rotate --rotate-jwt-secret``).
    """
    if resolution.origin != "jwt_secret_fallback":
        return None
    after = (", and .jwt_secret is replaced too (--rotate-jwt-secret signs everyone out); its old content, the old "
             "key, is saved first (unless --discard-old-key), so the printed restore puts it into .encryption_key"
             if jwt_secret_replaced else "; .jwt_secret itself is not changed (rotating it only signs everyone out)")
    return (
        f"{resolution.explanation}. This install still encrypts with its session-signing secret: whoever can sign "
        f"TREK sessions can also read its stored secrets. After this rotation the two are separate{after}."
    )


def environment_holds(keys: Sequence[Key]) -> bool:
    """True when this shell's ENCRYPTION_KEY is one of ``keys`` (used as is, as TREK uses it)."""
    value = os.environ.get("ENCRYPTION_KEY", "")
    if not value.strip():
        return False
    probe = Key(value, "$ENCRYPTION_KEY")
    return any(k.same_secret_as(probe) for k in keys)
