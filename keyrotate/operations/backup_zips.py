"""Find TREK's own backup ZIPs (``data/backups/backup-*.zip``, ``auto-backup-*.zip``) and say which keys open them.

Each holds a ``travel.db`` whose secrets are under the key of the day it was
made. Inspecting extracts that database into a private directory beside the ZIP
(deleted before returning, whatever happens) and verifies it with each key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from keyrotate.errors import KeyrotateError
from keyrotate.operations.backup_extract import (
    Unusable,
    extracted_database,
    member_date,
    name_the_zip,
    remove_leftover_extractions,
)
from keyrotate.rotation.report import SCHEMA_VERSION, VerifyReport
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key

BACKUP_GLOBS = ("backup-*.zip", "auto-backup-*.zip")


class Opens(enum.StrEnum):  # a str, so tables, CSV and JSON show it as its value
    """How much of a backup one key opens."""

    ALL = "all"
    SOME = "some"
    NONE = "none"
    NO_SECRETS = "no secrets"


def find_backups(data_dir: Path) -> list[Path]:
    """TREK's backup ZIPs in ``data_dir/backups``, oldest name first."""
    folder = data_dir / "backups"
    if not folder.is_dir():
        return []
    found = {p for pattern in BACKUP_GLOBS for p in folder.glob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: p.name)


@dataclass(frozen=True)
class KeyVerdict:
    key_source: str
    opens: Opens
    opened: int
    total: int


@dataclass(frozen=True)
class BackupStatus:
    path: str
    date: str  # timestamp of travel.db inside the ZIP (the backup's time, TREK's local clock)
    size: int
    keys: tuple[KeyVerdict, ...] = ()
    problem: str | None = None  # set when the ZIP or its database cannot be read


def inspect_backup(zip_path: Path, keys: Sequence[Key]) -> BackupStatus:
    """Which of ``keys`` opens the secrets of one backup: all, some or none."""
    size = zip_path.stat().st_size
    try:
        with extracted_database(zip_path) as (db, info):
            try:
                report = verify_database(db, keys)
            except KeyrotateError as exc:
                return BackupStatus(str(zip_path), member_date(info), size,
                                    problem=name_the_zip(exc.message, db, zip_path))
            return BackupStatus(str(zip_path), member_date(info), size, verdicts(report, keys))
    except Unusable as exc:
        return BackupStatus(str(zip_path), "", size, problem=exc.reason)


def verdicts(report: VerifyReport, keys: Sequence[Key]) -> tuple[KeyVerdict, ...]:
    """How much of a verified database each key opens (a keyring: each secret counts for the first key opening it)."""
    total = report.catalogued_tokens
    found = []
    for index, key in enumerate(keys):
        opened = sum(loc.opened_by[index] for loc in report.locations if loc.in_catalogue and loc.opened_by)
        opens = (Opens.NO_SECRETS if total == 0 else Opens.ALL if opened == total
                 else Opens.SOME if opened else Opens.NONE)
        found.append(KeyVerdict(key.source, opens, opened, total))
    return tuple(found)


def list_backups(data_dir: Path, keys: Sequence[Key], *,
                 notice: Callable[[str], None] | None = None) -> tuple[BackupStatus, ...]:
    """:func:`inspect_backup` for every ZIP :func:`find_backups` finds, after removing the copies a stopped
    run extracted beside them (each named through ``notice``)."""
    if (data_dir / "backups").is_dir():
        for removed in remove_leftover_extractions(data_dir / "backups"):
            if notice is not None:
                notice(removed)
    return tuple(inspect_backup(path, keys) for path in find_backups(data_dir))


@dataclass(frozen=True)
class BackupListing:
    """:func:`list_backups` as a renderable report."""

    directory: str
    backups: tuple[BackupStatus, ...]

    checklist = False
    title = "TREK backup ZIPs"
    columns = ("backup", "date", "size", "opens with")

    def rows(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        for b in self.backups:
            opens = b.problem and f"cannot be checked: {b.problem}" or "; ".join(
                f"{v.key_source}: {v.opens} ({v.opened}/{v.total})" for v in b.keys)
            out.append((Path(b.path).name, b.date, f"{b.size} bytes", opens))
        return out

    def notes(self) -> list[str]:
        if not self.backups:
            return [f"No backup-*.zip or auto-backup-*.zip in {self.directory}."]
        return [f"{len(self.backups)} backup(s) in {self.directory}. Dates are those of travel.db inside each ZIP.",
                "A backup opens with the key of the day it was made; after a rotation, re-encrypt them with "
                "`keyrotate rekey-backup` (or `rotate --rekey-backups`) so a restore still works."]

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "command": "backups", "directory": self.directory,
                "backups": [asdict(b) for b in self.backups]}
