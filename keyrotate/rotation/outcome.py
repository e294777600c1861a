"""Turning a pass's tallies into the rotation's report: counts per location, what was done, what to do next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from keyrotate.rotation.failures import FailedSecret
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.report import LocationResult, RotationReport
from keyrotate.rotation.tallies import Tally
from keyrotate.store.backup import restore_command
from keyrotate.trek.catalogue import Presence, ResolvedLocation
from keyrotate.trek.keys import Key
from keyrotate.trek.schema import DatabaseInfo


@dataclass(frozen=True)
class RunFacts:
    """What every report of one rotation shares."""

    options: RotateOptions
    info: DatabaseInfo
    keys: tuple[Key, ...]
    resolved: tuple[ResolvedLocation, ...]


@dataclass(frozen=True)
class SavedKey:
    path: Path | None = None  # where the old key was saved
    key_file_to_restore: Path | None = None  # the key file a restore puts back (None: no key part)


@dataclass(frozen=True)
class Finished:
    """How far a rotation got, for its report."""

    committed: bool
    backup: Path | None = None
    key_file_written: str | None = None
    verified: bool = False
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    saved: SavedKey = SavedKey()
    revoked: dict[str, int] | None = None


def locations(resolved: Sequence[ResolvedLocation], tallies: dict[str, Tally]) -> tuple[LocationResult, ...]:
    """Catalogued locations the scan skipped (and why), then the counts of every location it read."""
    out = []
    for entry in resolved:
        loc = entry.location
        if entry.presence is not Presence.ACTIVE:
            out.append(LocationResult(loc.label, loc.table, loc.column, True, entry.presence, entry.reason))
    for tally in tallies.values():
        if not tally.catalogued and not (sum(tally.opened_by) or tally.unopened):
            continue
        out.append(
            LocationResult(
                tally.label, tally.table, tally.column, tally.catalogued,
                opened_by=tuple(tally.opened_by), rewritten=tally.rewritten, plaintext=tally.plaintext,
                encrypted_plaintext=tally.encrypted_plaintext, empty=tally.empty, unopened=tally.unopened,
                outside_catalogue=tally.outside or not tally.catalogued,
            )
        )
    return tuple(out)


def rotation_report(
    run: RunFacts, tallies: dict[str, Tally], failed: tuple[FailedSecret, ...], finished: Finished
) -> RotationReport:
    options, backup = run.options, finished.backup
    saved = finished.saved
    return RotationReport(
        database=str(options.db_path),
        trek_version=run.info.version.evidence,
        key_sources=tuple(k.source for k in run.keys),
        dry_run=options.dry_run,
        committed=finished.committed,
        locations=locations(run.resolved, tallies),
        failures=failed,
        backup=str(backup) if backup else None,
        restore_command=(restore_command(backup, options.db_path, saved.key_file_to_restore, saved.path)
                         if backup else None),
        restore_needs_old_key=bool(backup and finished.key_file_written and saved.key_file_to_restore is None),
        old_key_saved=str(saved.path) if saved.path else None,
        key_file_written=finished.key_file_written,
        verified_after_commit=finished.verified,
        warnings=(*finished.warnings, *_skipped_warning(options, failed)),
        notes=finished.notes,
        next_steps=_next_steps(options, finished),
        revoked=finished.revoked or {},
    )


def _skipped_warning(options: RotateOptions, failed: tuple[FailedSecret, ...]) -> list[str]:
    skipped = [f for f in failed if f.catalogued]
    if not skipped or not options.skip_undecryptable:
        return []
    outside = sum(f.outside_catalogue for f in skipped)
    catalogued = len(skipped) - outside
    counted = " and ".join(part for part in (
        f"{catalogued} catalogued secret(s)" if catalogued else "",
        f"{outside} token(s) outside the catalogue" if outside else "") if part)
    # TREK reads a catalogued location (and gets "not set" from a value it cannot open); it never reads the cells
    # outside the catalogue where the stray tokens were found, so for those nothing changes inside TREK.
    effect = " ".join(part for part in (
        ("TREK will read the catalogued ones as 'not set'." if outside else "TREK will read them as 'not set'.")
        if catalogued else "",
        "TREK does not read the cells outside the catalogue: they stay as found, under a key none given opens."
        if outside else "") if part)
    return [f"{counted} open under no key and were LEFT UNTOUCHED (--skip-undecryptable). {effect}"]


def _next_steps(options: RotateOptions, finished: Finished) -> tuple[str, ...]:
    """The report's own short steps (JSON ``next_steps``). After a commit the ``rotate`` command prints the fuller
    :func:`~keyrotate.rotation.operator_steps.next_steps` instead (JSON ``operator_steps``); the summary shows these
    only when nothing was committed."""
    steps = []
    if finished.key_file_written and not finished.committed:
        steps.append(f"nothing needed re-encrypting; {finished.key_file_written} now holds the new key")
    if (finished.committed or finished.key_file_written) and options.key_file is not None:
        steps.append(
            "if TREK's environment sets ENCRYPTION_KEY (docker-compose.yml, .env, systemd unit), change it to the "
            "new key or remove it before restarting TREK; otherwise TREK puts the old key back"
        )
    elif finished.committed:
        steps.append(
            "give TREK the new key: write it to data/.encryption_key and change or remove ENCRYPTION_KEY in "
            "TREK's environment, then restart TREK"
        )
    return tuple(steps)
