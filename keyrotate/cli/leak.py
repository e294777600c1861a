"""The read-only leak reports: ``exposure`` (what a suspected key opens) and ``audit`` (what is in plaintext)."""

from __future__ import annotations

import shlex
import sys
from contextlib import suppress
from pathlib import Path

import click

from keyrotate.cli.exposure_render import ExposureWriter
from keyrotate.cli.inputs import database, given_keys, prompt_key, trek_keys
from keyrotate.cli.interrupted import signal_name, stopped_before_commit
from keyrotate.cli.key_forms import say_what_other_forms_opened, with_other_forms
from keyrotate.cli.options import (
    OPENS_DATABASE,
    data_dir_option,
    db_option,
    exit_codes_help,
    format_option,
    key_options,
    quiet_option,
    wait_option,
)
from keyrotate.cli.printable import printable
from keyrotate.cli.progress import progress_bars
from keyrotate.cli.render import emit
from keyrotate.cli.running import run, say
from keyrotate.errors import CancelledError, ExitCode, KeyrotateError
from keyrotate.operations.audit import audit_database
from keyrotate.operations.exposure import ExposureReport, find_exposure
from keyrotate.rotation.old_key import newest_backup

EXPOSURE_HELP = exit_codes_help({
    0: "report written (whatever the key opens)", **OPENS_DATABASE,
    6: "unusable key (empty, unreadable key file)",
    12: "interrupted; the message says whether the report on stdout is incomplete",
})
AUDIT_HELP = exit_codes_help({0: "report written (plaintext found or not)", **OPENS_DATABASE})


@click.command(epilog=EXPOSURE_HELP)
@db_option
@data_dir_option
@key_options("the suspected key")
@click.option("--no-copies", is_flag=True, help="Do not look for old copies and backup ZIPs next to the database.")
@format_option
@wait_option
@quiet_option
def exposure(
    db: Path | None, data_dir: Path | None, key_file: tuple[Path, ...], key_env: tuple[str, ...], no_copies: bool,
    fmt: str, wait: float, quiet: bool,
) -> None:
    """Leak response: every secret readable with a suspected key, as a checklist.

    For each secret: what it is, whose it is, where to revoke or reissue it
    (never the value). Also lists what a rotation cannot fix: TREK's backup
    ZIPs and other copies of the database that open with that key. Without a
    key option, the suspected key is the one TREK uses from --data-dir.
    Read-only.
    """

    def action() -> int:
        path = database(db, data_dir)
        keys = given_keys(key_file, key_env, "suspected") or trek_keys(data_dir, "suspected")
        if not keys:
            keys = [prompt_key("Suspected ENCRYPTION_KEY", "suspected", "--key-file FILE or --key-env NAME",
                               confirm=False)]
        other_forms = with_other_forms(keys)
        progress = progress_bars(False, quiet)  # on stderr: JSON on stdout is no reason to hide them

        def checking(number: int, total: int, copy: Path) -> None:
            progress.close()
            say(f"Checking copy {number} of {total}: {printable(str(copy))} ...", quiet=quiet)

        # sys.stdout is block-buffered when redirected to a file; click's stream flushes every line,
        # a write(2) per record (370,000 secrets as CSV: 11 s instead of 5 s).
        out = sys.stdout
        # JSON and CSV records go out while the pass runs: memory stays flat however many secrets there are.
        # The writer is render()'s exposure renderer in streaming form: the same bytes, never held whole.
        writer = ExposureWriter(out, fmt, str(path), (k.source for k in keys))
        try:
            writer.begin()
            try:
                report = find_exposure(path, keys, busy_timeout=wait, progress=progress.callback(),
                                       check_copies=not no_copies, keep_secrets=False,
                                       # text and markdown are written from the group counts: no record per secret
                                       on_rows=writer.rows if fmt in ("json", "csv") else None,
                                       data_dir=data_dir, on_copy=checking)
            finally:
                progress.close()
            writer.end(report)
            out.flush()
        except KeyboardInterrupt as interrupt:
            raise _cut_short(writer, interrupt) from None
        except KeyrotateError as error:  # a damaged value late in the pass: the records before it are out
            raise _failed_part_way(writer, error) from None
        say(f"{report.exposed} secret(s) to revoke or reissue; {len(report.copies)} old copy(ies) flagged.",
            quiet=quiet or fmt == "text")
        say_what_other_forms_opened(report, other_forms)
        before = _copy_from_before_the_rotation(report, key_file, key_env)
        if before is not None:
            say(before, quiet=quiet)
        return int(ExitCode.OK)

    run(action)


def _cut_short(writer: ExposureWriter, interrupt: KeyboardInterrupt) -> CancelledError:
    """Exit 12, saying what the interrupted report on stdout is: nothing, closed early, or cut mid-way."""
    error = stopped_before_commit(interrupt)
    if not writer.started:
        return error
    message = f"Interrupted ({signal_name(interrupt)}); the report on stdout is INCOMPLETE"
    if _close_incomplete(writer, error, f"{message}: {writer.records} secret(s) were listed before the stop."):
        return CancelledError(f"{message}: it lists the {writer.records} secret(s) found before the stop and ends "
                              'with "complete": false and an "error" member. Run it again for the whole list.')
    return CancelledError(f"{message}: it stops part-way ({writer.records} secret(s) listed), without its totals. "
                          "Run it again for the whole list.")


def _close_incomplete(writer: ExposureWriter, error: KeyrotateError, message: str | None = None) -> bool:
    """End a JSON report on stdout cut short by ``error`` with ``"complete": false`` and the error; False when
    it cannot be (not JSON, or cut mid-record)."""
    closed = writer.close_early(error.to_json(message))
    with suppress(OSError):
        sys.stdout.flush()
    return closed


def _failed_part_way(writer: ExposureWriter, error: KeyrotateError) -> KeyrotateError:
    """The error, saying what the report already on stdout is: a JSON one is closed as incomplete."""
    if not writer.started or not _close_incomplete(writer, error):
        return error
    return type(error)(f"{error.message}\nThe report on stdout is INCOMPLETE: it lists the {writer.records} secret(s) "
                       'found before this and ends with "complete": false and an "error" member.')


def _copy_from_before_the_rotation(report: ExposureReport, key_file: tuple[Path, ...], key_env: tuple[str, ...]) -> str | None:
    """After a rotation the suspected key opens nothing here, but a copy stolen before it opens what keyrotate's
    backup from before that rotation holds: the command that lists that (None when it does not apply)."""
    newest = newest_backup(Path(report.database)) if not report.exposed and report.not_opened else None
    if newest is None:
        return None
    keys = [*(part for path in key_file for part in ("--key-file", str(path.absolute()))),
            *(part for name in key_env for part in ("--key-env", name))]
    command = shlex.join(["keyrotate", "exposure", "--db", str(newest.absolute()), *keys])
    return (f"None of this database's secrets open with the suspected key any more: it was rotated away from it. "
            f"A copy taken before that rotation gives away what {newest.name}, the copy made just before it, holds. "
            f"Its checklist of what to revoke:\n    {command}")


@click.command(epilog=AUDIT_HELP)
@db_option
@data_dir_option
@format_option
@wait_option
def audit(db: Path | None, data_dir: Path | None, fmt: str, wait: float) -> None:
    """Secrets TREK keeps in plaintext, and the command that encrypts those it can.

    Reports catalogued locations still holding legacy plaintext, locations
    this TREK version reads as plaintext (e.g. users.unsplash_api_key in
    3.0.15), and columns or settings named like secrets that TREK never
    encrypts. Counts only, never values. Read-only; needs no key.
    """

    def action() -> int:
        emit(audit_database(database(db, data_dir), busy_timeout=wait), fmt)
        return int(ExitCode.OK)

    run(action)
