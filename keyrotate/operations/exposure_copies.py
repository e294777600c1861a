"""Copies of the database that a rotation cannot reach: keyrotate's and TREK's script's copies next to
``travel.db``, and TREK's backup ZIPs, with what a suspected key opens in each."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from keyrotate.operations.backup_extract import extracted_from, leftover_extractions
from keyrotate.operations.backup_zips import Opens, find_backups, inspect_backup
from keyrotate.rotation.old_key import copies_beside
from keyrotate.trek.keys import Key

# Copies of travel.db that keyrotate (and TREK's own script) leave next to it.
COPY_PATTERNS = (
    ("*.keyrotate-backup-*", "keyrotate's pre-rotation backup"),
    ("*.backup-*", "copy left by TREK's migrate-encryption script"),
)


@dataclass(frozen=True)
class ExposedCopy:
    path: str
    kind: str
    note: str


def find_exposed_copies(db_path: Path, suspected: Sequence[Key]) -> tuple[ExposedCopy, ...]:
    """Copies of the database next to it and TREK's backup ZIPs, with what the suspected key opens in each."""
    out: list[ExposedCopy] = []
    seen: set[Path] = set()
    for pattern, kind in COPY_PATTERNS:
        for path in copies_beside(db_path, pattern[1:]):
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            mode = stat.S_IMODE(path.stat().st_mode)
            readable = f" It is readable by other users (mode {mode:04o}): chmod 600 it now." if mode & 0o077 else ""
            key = Path(f"{path}.key")  # the old key rotate saved beside its backup
            beside = f" The old key itself is saved beside it in {key}: delete both together." if key.is_file() else ""
            out.append(ExposedCopy(str(path), kind, "opens with the old key; delete it once TREK runs fine on the new "
                                   "key, or move it somewhere safe." + readable + beside))
    for path in sorted(db_path.parent.glob(f"{db_path.name}.keyrotate-oldkey-*.key")):
        out.append(ExposedCopy(str(path), "old key saved by keyrotate (no backup beside it)", "the old key itself; delete it "
                               "once nothing you keep is under the old key"))
    if (db_path.parent / "backups").is_dir():
        for path in leftover_extractions(db_path.parent / "backups"):
            out.append(ExposedCopy(str(path), "copy of travel.db left by a stopped keyrotate run",
                                   f"opens with the key {extracted_from(path)} was under; delete it (the next "
                                   "`rekey-backup` or `rotate --rekey-backups` removes it)"))
    for zip_path in find_backups(db_path.parent):
        status = inspect_backup(zip_path, suspected)
        if status.problem:
            note = f"could not be checked ({status.problem}); assume it opens with the old key"
        else:
            opens = status.keys[0].opens
            if opens in (Opens.NONE, Opens.NO_SECRETS):
                continue
            note = (f"the suspected key opens {opens} of its secrets (backup from {status.date}); "
                    "re-encrypt it with `keyrotate rekey-backup` or `rotate --rekey-backups`, or delete it")
        out.append(ExposedCopy(str(zip_path), "TREK backup ZIP", note))
    return tuple(out)
