"""What a rotation cannot reach in a stolen data directory: copies of the database, TREK's backup ZIPs and
keys, each checked with the suspected key and with every other key the directory holds.

Copies are any SQLite file beside ``travel.db`` or in ``backups/`` (:mod:`exposure_files`), checked like
the ZIPs: read-only, streamed, each listed only when a key opens some of its secrets, or when it cannot be
checked. A key found in the directory (saved by an earlier keyrotate run, an old ``.jwt_secret``) is as
stolen as the directory: what it opens is listed with its file's name, never its text.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyrotate.errors import KeyrotateError, NotADatabaseError, NotTrekError
from keyrotate.operations.backup_extract import extracted_from, leftover_extractions
from keyrotate.operations.backup_zips import KeyVerdict, Opens, find_backups, inspect_backup, verdicts
from keyrotate.operations.exposure_files import FoundKeys, files_beside, keys_in_files
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key

ASSUME = "assume it opens with the suspected key"
COPY_ACTION = "delete it once TREK runs fine on the new key, or move it somewhere safe."
CopyProgress = Callable[[int, int, Path], None]  # (number, of how many, the copy or ZIP): called before each check


@dataclass(frozen=True)
class ExposedCopy:
    path: str
    kind: str
    note: str
    opened_by: tuple[str, ...] = ()  # the keys that open some of it (key sources, never the text)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "note": self.note, "opened_by": list(self.opened_by)}


def copy_kind(path: Path, db_path: Path) -> str:
    name = path.name
    if ".keyrotate-backup-" in name:
        return "keyrotate's pre-rotation backup"
    if name.startswith(f"{db_path.name}.backup-"):
        return "copy left by TREK's migrate-encryption script"
    return "copy of the database in backups/" if path.parent != db_path.parent else "copy of the database"


def find_exposed_copies(db_path: Path, suspected: Sequence[Key], *, unopened_here: int = 0,
                        on_copy: CopyProgress | None = None) -> tuple[ExposedCopy, ...]:
    """Copies of the database and TREK's backup ZIPs that the suspected key, or a key found beside them, opens;
    files holding the suspected key; the other keys found and what each opens. ``unopened_here``: values of
    the database itself the suspected key does not open, which those other keys are tried on. ``on_copy`` hears
    of each copy and ZIP before it is checked (seconds each for a large database)."""
    found = files_beside(db_path)
    keys = keys_in_files(found, db_path, suspected)
    trial = [*suspected, *keys.others]
    out: list[ExposedCopy] = []
    opened_by_other: dict[str, list[str]] = {}  # another key's source -> what it opens
    if unopened_here and keys.others:
        out += _under_other_keys(db_path, keys.others, opened_by_other)
    listed: set[Path] = set()
    zips = find_backups(db_path.parent)
    checks = len(found.databases) + len(zips)
    for number, path in enumerate(found.databases, 1):
        if on_copy is not None:
            on_copy(number, checks, path)
        copy = _database_copy(path, db_path, trial, len(suspected), keys, opened_by_other)
        if copy is not None:
            out.append(copy)
            listed.add(path)
    if (db_path.parent / "backups").is_dir():
        for path in leftover_extractions(db_path.parent / "backups"):
            out.append(ExposedCopy(str(path), "copy of travel.db left by a stopped keyrotate run",
                                   f"opens with the key {extracted_from(path)} was under; delete it (the next "
                                   "`rekey-backup` or `rotate --rekey-backups` removes it)"))
    for number, zip_path in enumerate(zips, len(found.databases) + 1):
        if on_copy is not None:
            on_copy(number, checks, zip_path)
        copy = _backup_zip(zip_path, trial, len(suspected), opened_by_other)
        if copy is not None:
            out.append(copy)
    out += _key_files(keys, listed, opened_by_other, db_path.parent)
    out += [ExposedCopy(str(path), "not readable by this user", "not checked: it may be a copy of the database or "
                        f"hold a key, and a thief with the files reads it; run exposure as its owner or root, or {ASSUME}")
            for path in found.unreadable]
    return tuple(out)


def _database_copy(path: Path, db_path: Path, trial: Sequence[Key], suspected: int, keys: FoundKeys,
                   opened_by_other: dict[str, list[str]]) -> ExposedCopy | None:
    kind = copy_kind(path, db_path)
    try:
        verdict = verdicts(verify_database(path, trial), trial)
    except NotTrekError:
        return None  # another program's database: not a copy of TREK's
    except (KeyrotateError, OSError) as exc:
        reason = ("it is damaged or not a whole database" if isinstance(exc, NotADatabaseError)
                  else exc.message if isinstance(exc, KeyrotateError) else str(exc))
        return ExposedCopy(str(path), kind, f"could not be checked ({reason}); {ASSUME}: {COPY_ACTION}"
                           + _side_files(path))
    opens = _opens(verdict, suspected, path.name, opened_by_other)
    if opens is None:
        return None
    words, opened_by = opens
    note = f"{words}; {COPY_ACTION}" + _side_files(path)
    mode = _mode(path)
    if mode is not None and mode & 0o077:
        note += f" It is readable by other users (mode {mode:04o}): `{shlex.join(['chmod', '600', str(path.absolute())])}` now."
    key = Path(f"{path}.key")  # the old key rotate saved beside its backup
    if key in keys.holding_suspected:
        note += f" The old key itself is saved beside it in {key}: delete both together."
    return ExposedCopy(str(path), kind, note, opened_by)


def _side_files(copy: Path) -> str:
    """The copy's -wal (part of the copy: it can hold secrets the main file does not) and -shm, to go with it."""
    side = [f"{copy.name}{suffix}" for suffix in ("-wal", "-shm", "-journal") if Path(f"{copy}{suffix}").exists()]
    return f" Delete {' and '.join(side)} beside it with it: part of the same copy." if side else ""


def _under_other_keys(db_path: Path, others: Sequence[Key], opened_by_other: dict[str, list[str]]) -> list[ExposedCopy]:
    """The database's own values another key in the directory opens (a database left under two keys)."""
    try:
        verdict = verdicts(verify_database(db_path, others), others)
    except (KeyrotateError, OSError):
        return []  # the pass with the suspected key read it already: its errors were said there
    opens = _opens(verdict, 0, db_path.name, opened_by_other)
    if opens is None:
        return []
    words, opened_by = opens
    commands = ", ".join(
        "`" + shlex.join(["keyrotate", "exposure", "--db", str(db_path.absolute()), "--key-file",
                          str(Path(source.removeprefix("key in ")).absolute())]) + "`" for source in opened_by)
    return [ExposedCopy(str(db_path), "this database: values the suspected key does not open",
                        f"{words}: revoke or reissue those too; whose they are: {commands}", opened_by)]


def _backup_zip(zip_path: Path, trial: Sequence[Key], suspected: int,
                opened_by_other: dict[str, list[str]]) -> ExposedCopy | None:
    status = inspect_backup(zip_path, trial)
    if status.problem:
        return ExposedCopy(str(zip_path), "TREK backup ZIP", f"could not be checked ({status.problem}); {ASSUME}")
    opens = _opens(status.keys, suspected, zip_path.name, opened_by_other)
    if opens is None:
        return None
    note, opened_by = opens
    rekey = shlex.join(["keyrotate", "rekey-backup", str(zip_path.absolute()), "--data-dir",
                        str(zip_path.parent.parent.absolute())])
    return ExposedCopy(str(zip_path), "TREK backup ZIP",
                       f"{note} (backup from {status.date}); re-encrypt it: the rotation does it with "
                       f"`--rekey-backups`, and once the database is rotated `{rekey}` does; or delete it", opened_by)


def _opens(verdict: Sequence[KeyVerdict], suspected: int, name: str,
           opened_by_other: dict[str, list[str]]) -> tuple[str, tuple[str, ...]] | None:
    """What the keys open of one copy, in words, and which keys; None when none opens anything."""
    if not verdict or verdict[0].total == 0:
        return None
    total = verdict[0].total
    parts, opened_by = [], []
    mine = sum(v.opened for v in verdict[:suspected])
    if mine:
        parts.append(f"the suspected key opens {_share(mine, total)}")
        opened_by += [v.key_source for v in verdict[:suspected] if v.opened]
    for other in verdict[suspected:]:
        if other.opened:
            parts.append(f"the {other.key_source} (in the directory: a copy of it carries this key too) opens "
                         f"{_share(other.opened, total)}")
            opened_by.append(other.key_source)
            opened_by_other.setdefault(other.key_source, []).append(f"{name} ({other.opened} of {total} secrets)")
    return ("; ".join(parts), tuple(opened_by)) if parts else None


def _share(opened: int, total: int) -> str:
    return f"{Opens.ALL} {total} of its secrets" if opened == total else f"{opened} of its {total} secrets"


def _key_files(keys: FoundKeys, listed: set[Path], opened_by_other: dict[str, list[str]],
               folder: Path) -> list[ExposedCopy]:
    out = []
    for path in keys.holding_suspected:
        if Path(str(path).removesuffix(".key")) in listed:
            continue  # named in the note of the copy it sits beside
        out.append(ExposedCopy(str(path), "file holding the suspected key",
                               "the suspected key itself, in the directory: delete it once nothing you keep is "
                               "under that key"))
    for key in keys.others:
        opened = opened_by_other.get(key.source)
        if opened:
            out.append(ExposedCopy(key.source.removeprefix("key in "), "another key in the directory",
                                   f"opens {', '.join(opened)}: whoever has a copy of the directory has this key too. Treat "
                                   "what it opens as exposed; delete the key once nothing you keep is under it",
                                   (key.source,)))
    if keys.left_out:
        out.append(ExposedCopy(str(folder), "keys not tried", f"{keys.left_out} more file(s) that may hold a key were not "
                               "tried on the copies: check them by hand"))
    return out


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.lstat(path).st_mode)
    except OSError:
        return None
