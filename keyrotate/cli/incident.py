"""rotate --incident's leak checklist: read before the rotation, printed after it with what the run did ticked
off, or despite its failure headed as such."""

from __future__ import annotations

import dataclasses
import os
import shlex
import stat
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keyrotate.cli.inputs import kept_old_keys
from keyrotate.cli.key_forms import say_what_other_forms_opened, with_other_forms
from keyrotate.cli.printable import printable
from keyrotate.cli.render import emit
from keyrotate.cli.rotate_args import RotationRun
from keyrotate.cli.running import add_to_error_document, say
from keyrotate.errors import KeyrotateError
from keyrotate.rotation.old_key import newest_backup
from keyrotate.rotation.report import RotationReport
from keyrotate.trek.beyond import INVITES, JOURNEY_LINKS, SESSION_SECRET, SHARE_LINKS, Finding
from keyrotate.trek.keys import Key

if TYPE_CHECKING:
    from keyrotate.operations.exposure import ExposureReport

# Imported when they run: a plain rotate (and --help) does not pay for the exposure scan and the copies check.

DONE = "done by this run"
LINKS_DELETED = f"{DONE} (--revoke-share-links): every link is deleted; create new ones where still wanted"
INVITES_DELETED = f"{DONE} (--expire-invites): every open invite is deleted; send new ones where still wanted"
JWT_REPLACED = f"{DONE} (--rotate-jwt-secret): every user is signed out at TREK's next start"
NEW_FILES_READABLE = "new key files readable by every local user"


def incident_before(rotation: RotationRun) -> ExposureReport | None:
    """The secrets the old key opens, read before the rotation changes them (on a rerun after a commit: read
    from that run's backup, with the old key it saved)."""
    if not rotation.args.incident:
        return None
    from keyrotate.operations.exposure import find_exposure  # --incident only: see the note at the top

    def exposure_of(source: Path, keys: list[Key]) -> ExposureReport:
        return find_exposure(source, keys, busy_timeout=rotation.args.wait, check_copies=False, keep_secrets=False,
                             data_dir=rotation.path.parent)

    new, backup = rotation.keys.new, this_runs_backup(rotation)
    suspected = list(rotation.keys.old)
    # Run again after a commit: the key file (the "old" key read from it) may be the new key already.
    if rotation.keys.reused or any(key.same_secret_as(new) for key in suspected):
        suspected = kept_old_keys(rotation.args.data_dir, suspected, new, backup, only_the_backups=True)
        if backup is None or not suspected:
            why = ("the old key was not kept (--discard-old-key)" if backup is not None else
                   "no copy from before the rotation is there" + (" (--no-backup)" if rotation.args.no_backup else ""))
            say(f"No leak checklist: the database is under the new key already and {why}. Run `keyrotate exposure` "
                "with the suspected key on a copy made before the rotation.", quiet=rotation.args.quiet)
            return None
        say(f"The leak checklist is of {backup}, the earlier run's copy from before its rotation.",
            quiet=rotation.args.silent)
        source = backup
    else:
        source = rotation.path
    other_forms = with_other_forms(suspected)  # as `exposure` does: what the leaked text opens, in either form
    exposure = exposure_of(source, suspected)
    if source == rotation.path and not exposure.exposed and backup is not None:
        in_backup = exposure_of(backup, suspected)  # a run that committed before it wrote the key file
        if in_backup.exposed:
            say(f"The leak checklist is of {backup}, the earlier run's copy from before its rotation.",
                quiet=rotation.args.silent)
            exposure = in_backup
    if not exposure.exposed and exposure.not_opened:  # rotated already with no copy from before, or a wrong key
        say("No leak checklist: the old key opens none of the database's secrets (an earlier run of this command "
            "rotated it with no copy from before, or the key is wrong). Run `keyrotate exposure` with the suspected "
            "key on a copy made before the rotation.", quiet=rotation.args.quiet)
        return None
    say_what_other_forms_opened(exposure, other_forms)
    rotation.suspected[:] = suspected
    return exposure


def this_runs_backup(rotation: RotationRun) -> Path | None:
    """Where this command keeps (or an earlier run of it kept) its pre-rotation backup, when it is a file."""
    if rotation.args.no_backup:
        return None
    given = rotation.args.backup_path
    if given is not None:
        return given if given.is_file() and not given.is_symlink() else None
    return newest_backup(rotation.path)


def incident_despite_failure(exposure: ExposureReport | None, rotation: RotationRun, error: KeyrotateError) -> None:
    """A rotation that fails must not swallow the leak checklist (revoking does not wait for the database), nor let
    it pass for an all-clear: it is headed as a failed run, or in --json carried by the one error document."""
    if exposure is None:
        return
    if not exposure.exposed:  # a wrong old key (exit 7): "0 readable" would read as "nothing leaked"
        say("No leak checklist: the old key given opens none of the database's secrets, so what it opens says "
            "nothing about what leaked. Find the key TREK used, then run `keyrotate exposure` with it.",
            quiet=rotation.args.quiet)
        return
    from keyrotate.operations.exposure_copies import find_exposed_copies  # --incident only

    copies = find_exposed_copies(rotation.path, rotation.suspected or rotation.keys.old, on_copy=_checking(rotation))
    show_despite_failure(dataclasses.replace(exposure, copies=copies), rotation, error)


def show_despite_failure(exposure: ExposureReport, rotation: RotationRun, error: KeyrotateError, *,
                         committed: bool = False) -> None:
    """The checklist of a run that failed, on stdout headed as such, or in --json in the error document."""
    if rotation.args.json_output:
        add_to_error_document(exposure=incident_json(exposure))  # stdout holds that one document, nothing else
        return
    if committed or error.committed:  # e.g. the key file could not be written: the database is rotated, the run is not done
        heading = (f"ROTATION NOT FINISHED (exit {int(error.exit_code)}): the database is under the new key, but the "
                   "run stopped before its end (see the error). What the suspected key opened, to revoke and reissue:")
    else:
        heading = (f"ROTATION FAILED (exit {int(error.exit_code)}): nothing was rotated, the database is still under "
                   "the suspected key. What that key opens, to revoke and reissue anyway:")
    click.echo(heading + "\n")
    emit(exposure, "text")


def incident_json(exposure: ExposureReport) -> dict[str, Any]:
    """--incident's checklist in rotate's JSON document."""
    from keyrotate.cli.exposure_render import tail_json  # --incident only

    tail = tail_json(exposure)  # the copies and plaintext too, as in the text checklist and `exposure`'s JSON
    return {"totals": tail.pop("totals"), "groups": [g.to_json() for g in exposure.groups.lines()],
            "plaintext_groups": [g.to_json() for g in exposure.plaintext_groups.lines()], **tail}


def incident_after(rotation: RotationRun, exposure: ExposureReport) -> ExposureReport:
    """The checklist once the rotation is done: with the copies still under the old key now (its backup included)."""
    from keyrotate.operations.exposure_copies import find_exposed_copies  # --incident only

    suspected = rotation.suspected or rotation.keys.old
    return dataclasses.replace(exposure, copies=find_exposed_copies(rotation.path, suspected, on_copy=_checking(rotation)))


def ticked_off(exposure: ExposureReport, done: dict[str, str]) -> ExposureReport:
    """The findings this run dealt with (``what`` -> what it did) marked done: listed still, no longer a task."""
    beyond = tuple(dataclasses.replace(f, action=done[f.what], done=True) if f.what in done else f
                   for f in exposure.beyond)
    return dataclasses.replace(exposure, beyond=beyond)


def incident_final(rotation: RotationRun, report: RotationReport, exposure: ExposureReport, *,
                   jwt_replaced: bool) -> ExposureReport:
    """The checklist as the run ends: what it did ticked off, and the new key files it left readable by all."""
    done: dict[str, str] = {SESSION_SECRET: JWT_REPLACED} if jwt_replaced else {}
    if report.committed and not report.dry_run:
        if "share_links" in report.revoked:
            done |= {SHARE_LINKS: LINKS_DELETED, JOURNEY_LINKS: LINKS_DELETED}
        if "invites" in report.revoked:
            done[INVITES] = INVITES_DELETED
    exposure = ticked_off(exposure, done)
    if rotation.args.encrypt_plaintext and report.committed and not report.dry_run:
        encrypted = sum(loc.encrypted_plaintext for loc in report.locations)
        exposure = dataclasses.replace(exposure, plaintext_encrypted=encrypted)
    written = [Path(report.key_file_written)] if report.key_file_written and not report.dry_run else []
    if jwt_replaced and rotation.args.data_dir is not None:
        written.append(rotation.args.data_dir / ".jwt_secret")
    readable = _readable_by_all(written)
    return dataclasses.replace(exposure, beyond=(*exposure.beyond, readable)) if readable else exposure


def _readable_by_all(paths: list[Path]) -> Finding | None:
    """The new secrets this run wrote into files any local user can read: the chmod that stops that, not done here
    (keyrotate keeps each file's mode: TREK may read it through its group, or as "other" under Docker)."""
    modes = {}
    for path in paths:
        with suppress(OSError):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o007:
                modes[path] = mode
    if not modes:
        return None
    command = shlex.join(["chmod", "o-rwx", *(str(p.absolute()) for p in modes)])
    return Finding(
        NEW_FILES_READABLE, ", ".join(f"{p} (mode {m:04o})" for p, m in modes.items()), len(modes),
        "Every account on this host can read the new key or session secret this run wrote.",
        f"`{command}`, unless TREK reads them as \"other\" (a container running as another user: check with "
        "`ls -ln` against TREK's user first); keyrotate keeps each file's mode so TREK can still read it")


def _checking(rotation: RotationRun) -> Callable[[int, int, Path], None]:
    """A line on stderr per copy and backup ZIP checked for the checklist: seconds each for a large database."""
    def checking(number: int, total: int, copy: Path) -> None:
        say(f"Checking copy {number} of {total} for the checklist: {printable(str(copy))} ...",
            quiet=rotation.args.silent)

    return checking
