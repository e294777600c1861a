"""Re-encrypt the ``travel.db`` inside TREK's backup ZIPs, each ZIP whole or not at all.

Rekeying runs the same :func:`rotate_database` as the live database on an
extracted copy, then swaps it into a new ZIP in which every other member is
byte-identical, checks that ZIP and renames it over the old one.
"""

from __future__ import annotations

import enum
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import hashes

from keyrotate.errors import KeyrotateError, WrongKeyError
from keyrotate.operations.backup_extract import (
    DB_MEMBER,
    Unusable,
    extracted_database,
    name_the_zip,
    remove_leftover_extractions,
)
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.report import SCHEMA_VERSION
from keyrotate.rotation.verify import verify_database
from keyrotate.store.files import replacing
from keyrotate.store.ziparchive import ZipLayoutError, check_member_replaceable, read_layout, replace_member
from keyrotate.trek.keys import Key


class RekeyOutcome(enum.StrEnum):  # a str, so tables, CSV and JSON show it as its value
    """What became of one backup ZIP."""

    REKEYED = "rekeyed"
    ALREADY_NEW = "already on the new key"
    LEFT_AS_IT_IS = "left as it is"
    WOULD_BE_REKEYED = "would be rekeyed"


@dataclass(frozen=True)
class RekeyResult:
    path: str
    outcome: RekeyOutcome
    reason: str = ""
    rotated: int = 0

    @property
    def left_alone(self) -> bool:
        return self.outcome is RekeyOutcome.LEFT_AS_IT_IS


_COUNTED = {RekeyOutcome.REKEYED: "re-encrypted", RekeyOutcome.ALREADY_NEW: "already on the new key",
            RekeyOutcome.LEFT_AS_IT_IS: "left as it is", RekeyOutcome.WOULD_BE_REKEYED: "would be re-encrypted"}

_OTHER_KEY = ("none of the old keys opens its secrets: it was made under another key; give that key too "
              "(--old-key-file is repeatable)")


def rekey_backup(
    zip_path: Path,
    old_keys: Sequence[Key],
    new_key: Key,
    *,
    encrypt_plaintext: bool = False,
    dry_run: bool = False,
) -> RekeyResult:
    """Re-encrypt the ``travel.db`` inside one backup ZIP, or leave the ZIP exactly as it is.

    The new ZIP is written next to the old one (its owner and mode kept), checked member by
    member, fsynced and renamed over it, so a crash leaves either the old ZIP
    or the new one, never half of either.
    """
    def left(reason: str) -> RekeyResult:
        return RekeyResult(str(zip_path), RekeyOutcome.LEFT_AS_IT_IS, reason)

    if zip_path.is_symlink():
        return left("it is a symbolic link and keyrotate never writes through one; rekey the file it points to")
    try:
        with zip_path.open("rb") as archive:
            check_member_replaceable(archive, DB_MEMBER)  # before any work, so a dry run reports what the run will do
        with extracted_database(zip_path) as (db, _info):
            if not old_keys:  # none known (a rerun after --discard-old-key): only what is under the new key is done
                try:
                    if verify_database(db, [new_key]).ok:
                        return RekeyResult(str(zip_path), RekeyOutcome.ALREADY_NEW)
                except KeyrotateError as exc:
                    return left(name_the_zip(exc.message, db, zip_path))
                return left("no old key is known for it (none given, none saved beside the database); give the key "
                            "it is under: keyrotate rekey-backup ZIP --old-key-file FILE")
            options = RotateOptions(db, tuple(old_keys), new_key, backup_path=None, dry_run=dry_run,
                                    encrypt_plaintext=encrypt_plaintext)
            try:
                report = rotate_database(options)
            except WrongKeyError:
                return left(_OTHER_KEY)
            except KeyrotateError as exc:
                return left(name_the_zip(exc.message, db, zip_path))
            if dry_run:
                outcome = RekeyOutcome.WOULD_BE_REKEYED if report.rotated else RekeyOutcome.ALREADY_NEW
                return RekeyResult(str(zip_path), outcome, rotated=report.rotated)
            if not report.committed:
                return RekeyResult(str(zip_path), RekeyOutcome.ALREADY_NEW)
            _write_archive(zip_path, db)
            return RekeyResult(str(zip_path), RekeyOutcome.REKEYED, rotated=report.rotated)
    except (Unusable, ZipLayoutError) as exc:
        return left(exc.reason)
    except OSError as exc:
        return left(f"writing the new ZIP failed ({exc.strerror or exc})")


# Called before each ZIP (result None) and after it: (number from 1, how many, result, path).
RekeyProgress = Callable[[int, int, "RekeyResult | None", Path], None]


def rekey_backups(
    paths: Sequence[Path], old_keys: Sequence[Key], new_key: Key, *, encrypt_plaintext: bool = False,
    dry_run: bool = False, on_each: RekeyProgress | None = None, notice: Callable[[str], None] | None = None,
) -> tuple[RekeyResult, ...]:
    """One ZIP after the other; an interrupt between or inside them leaves each ZIP whole, under one key.

    First the copies of travel.db that stopped runs extracted beside these ZIPs are removed (each named
    through ``notice``)."""
    for folder in dict.fromkeys(path.parent for path in paths):
        for removed in remove_leftover_extractions(folder):
            if notice is not None:
                notice(removed)
    results = []
    for number, path in enumerate(paths, 1):
        if on_each is not None:
            on_each(number, len(paths), None, path)
        results.append(rekey_backup(path, old_keys, new_key, encrypt_plaintext=encrypt_plaintext, dry_run=dry_run))
        if on_each is not None:
            on_each(number, len(paths), results[-1], path)
    return tuple(results)


def _write_archive(zip_path: Path, new_db: Path) -> None:
    # Run as root against a TREK volume, the new ZIP must still belong to TREK's user.
    with replacing(zip_path, owner_like=zip_path) as (partial, out), zip_path.open("rb") as source:
        layout = read_layout(source)
        replace_member(source, layout, DB_MEMBER, new_db, out)
        out.flush()
        _check_archive(zip_path, partial, new_db)


def _sha256(handle: IO[bytes]) -> bytes:
    # cryptography's OpenSSL, not hashlib: the CLI's hashlib is Python's own, six times slower (keyrotate.__main__).
    digest = hashes.Hash(hashes.SHA256())
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    return digest.finalize()


def _check_archive(original: Path, rewritten: Path, new_db: Path) -> None:
    """Same members in the same order with the same names, times and contents; travel.db is the new one."""
    with zipfile.ZipFile(original) as old, zipfile.ZipFile(rewritten) as new:
        if new.testzip() is not None:
            raise ZipLayoutError("the rewritten ZIP failed its own CRC check; the original was kept")
        old_infos, new_infos = old.infolist(), new.infolist()
        if [i.filename for i in old_infos] != [i.filename for i in new_infos]:
            raise ZipLayoutError("the rewritten ZIP lists different members; the original was kept")
        for before, after in zip(old_infos, new_infos, strict=True):
            if not _same_member(before, after):
                raise ZipLayoutError(f"member {before.filename!r} changed while rewriting; the original was kept")
        with new.open(DB_MEMBER) as member:
            inside = _sha256(member)
    with new_db.open("rb") as handle:
        if _sha256(handle) != inside:
            raise ZipLayoutError("travel.db inside the rewritten ZIP does not match the rotated copy; the original was kept")


def _same_member(before: zipfile.ZipInfo, after: zipfile.ZipInfo) -> bool:
    """Same time and attributes; for every member but travel.db, the same contents too."""
    same = (before.date_time, before.external_attr) == (after.date_time, after.external_attr)
    if before.filename != DB_MEMBER:
        same = same and (before.CRC, before.compress_size, before.file_size) == (
            after.CRC, after.compress_size, after.file_size)
    return same


@dataclass(frozen=True)
class RekeyReport:
    results: tuple[RekeyResult, ...]

    checklist = False
    columns = ("backup", "outcome", "secrets", "reason")

    @property
    def title(self) -> str:
        """``Backup ZIPs (1 re-encrypted, 2 already on the new key)``: how many of each, not only how many."""
        counts = {outcome: sum(r.outcome is outcome for r in self.results) for outcome in RekeyOutcome}
        done = ", ".join(f"{n} {_COUNTED[outcome]}" for outcome, n in counts.items() if n)
        return f"Backup ZIPs ({done})" if done else "Backup ZIPs"

    @property
    def left_alone(self) -> tuple[RekeyResult, ...]:
        return tuple(r for r in self.results if r.left_alone)

    def rows(self) -> list[tuple[str, ...]]:
        return [(r.path, r.outcome, str(r.rotated), r.reason) for r in self.results]

    def notes(self) -> list[str]:
        notes = [f"LEFT AS IT IS (still opens only with its old key, if at all): {r.path}: {r.reason}"
                 for r in self.left_alone]
        if any(r.outcome is RekeyOutcome.REKEYED for r in self.results):
            notes.append("The copies of travel.db extracted to re-encrypt them were deleted. Copies of these ZIPs "
                         "made before today (off-site, other disks) still open with the old key.")
        return notes

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "command": "rekey-backup",
                "results": [asdict(r) for r in self.results]}
