"""The operations commands (``backups``, ``rekey-backup``, ``exposure``, ``audit``) and the
extra steps ``rotate`` takes with ``--generate-new-key``, ``--rekey-backups`` and ``--incident``.

Kept apart from ``cli.py`` so the core commands stay short; registered on the
same click group. Reports go to stdout, summaries and warnings to stderr.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from keyrotate.cli.app import (
    _check_new_key,
    _database,
    _keys,
    _progress,
    _prompt_key,
    _run,
    _say,
    _trek_keys,
    _warn,
    data_dir_option,
    db_option,
    exit_codes_help,
    key_options,
    main,
    quiet_option,
    wait_option,
)
from keyrotate.cli.exposure_render import ExposureWriter, exposure_text, totals
from keyrotate.cli.interrupted import signal_name, stopped_before_commit
from keyrotate.cli.render import FORMATS, render
from keyrotate.errors import ExitCode, InputNotFoundError, InterruptedAfterCommitError, KeyProblemError, KeyrotateError
from keyrotate.operations.audit import audit_database
from keyrotate.operations.backup_zips import (
    BackupListing,
    RekeyReport,
    RekeyResult,
    find_backups,
    list_backups,
    rekey_backups,
)
from keyrotate.operations.exposure import ExposureReport, find_exposure
from keyrotate.operations.exposure_copies import find_exposed_copies
from keyrotate.operations.jwt_secret import JwtRotation, rotate_jwt_secret
from keyrotate.rotation.old_key import environment_holds, generate_new_key, next_steps, saved_old_keys
from keyrotate.rotation.report import RotationReport
from keyrotate.store.processes import refuse_if_open_elsewhere
from keyrotate.trek.keys import Key

_OPENS_DATABASE = {
    3: "database or data directory not found", 4: "not SQLite, or damaged", 5: "SQLite, but not TREK's",
    10: "database in use (another program holds its lock longer than --wait)",
}
BACKUPS_HELP = exit_codes_help({
    0: "listed (a ZIP the key does not open is reported, not an error)",
    3: "data directory not found, or no key file TREK would read in it",
    6: "unusable key (empty, key file missing or unreadable)",
})
REKEY_BACKUP_HELP = exit_codes_help({
    0: "every ZIP rekeyed or already on the new key (--dry-run: every ZIP would be)",
    3: "a ZIP or the data directory not found", 6: "unusable key (empty, same as the other, unreadable key file)",
    8: "some ZIP was (or, with --dry-run, would be) left as it is; the report says why",
    13: "interrupted after some ZIP was rewritten: every ZIP is whole; run the same command again to finish",
})
EXPOSURE_HELP = exit_codes_help({
    0: "report written (whatever the key opens)", **_OPENS_DATABASE,
    6: "unusable key (empty, unreadable key file)",
})
AUDIT_HELP = exit_codes_help({0: "report written (plaintext found or not)", **_OPENS_DATABASE})
JWT_HELP = exit_codes_help({
    0: "replaced", 3: "data directory or .jwt_secret not found", 6: ".jwt_secret unreadable or a symbolic link",
    10: "travel.db in use (stop TREK)", 11: "cannot write (a file in the way, read-only, disk full)",
})

format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
                             help="Report format on stdout: text for a terminal, json, markdown or csv for a ticket.")


# -- rotate's extra steps ----------------------------------------------------


def new_key_for_rotation(generate: bool, out: Path | None, file: Path | None, env: str | None) -> Key | None:
    """With --generate-new-key, the new key, already on disk; None otherwise."""
    if not generate:
        if out is not None:
            raise click.UsageError("--new-key-out only goes with --generate-new-key.")
        return None
    if file or env:
        raise click.UsageError("--generate-new-key makes the new key; do not also give --new-key-file/--new-key-env.")
    if out is None:
        raise click.UsageError("--generate-new-key needs --new-key-out FILE, where the key is saved before anything else.")
    try:
        key = generate_new_key(out)
    except KeyboardInterrupt as interrupt:
        raise stopped_before_commit(interrupt, out if out.exists() else None) from None
    _say(f"Generated the new key into {out} (mode 0600) before touching the database. Keep it: it is the only copy.")
    return key


def not_used_note(error: KeyrotateError, out: Path) -> KeyrotateError:
    return type(error)(f"{error.message}\nThe new key in {out} was not used; delete it, or reuse it with "
                       f"--new-key-file {out}.")


@dataclass
class RotationExtras:
    json: dict[str, Any] = field(default_factory=dict)
    stdout: str | None = None
    zips_done: list[str] = field(default_factory=list)  # backup ZIPs finished (rekeyed, or already on the new key)
    zips_left: int = 0  # backup ZIPs left as they are


def incident_before(path: Path, old_keys: Sequence[Key], incident: bool, wait: float) -> ExposureReport | None:
    """The secrets the old key opens, read before the rotation changes them."""
    if not incident:
        return None
    return find_exposure(path, old_keys, busy_timeout=wait, check_copies=False, keep_secrets=False)


def incident_despite_failure(exposure: ExposureReport | None, path: Path, old_keys: Sequence[Key]) -> None:
    """A rotation that fails must not swallow the leak checklist: revoking does not wait for the database."""
    if exposure is not None:
        click.echo(exposure_text(dataclasses.replace(exposure, copies=find_exposed_copies(path, old_keys))))


def finish_rotation(
    report: RotationReport, *, path: Path, data_dir: Path | None, old_keys: Sequence[Key], new_key: Key,
    new_key_file: Path | None, rekey: bool, encrypt_plaintext: bool, exposure: ExposureReport | None, quiet: bool,
    extras: RotationExtras | None = None,
) -> RotationExtras:
    extras = extras if extras is not None else RotationExtras()
    if rekey:
        def each(index: int, total: int, result: RekeyResult | None, zip_path: Path) -> None:
            if result is None:
                _say(f"Backup ZIP {index} of {total}: {zip_path} ...", quiet=quiet)
            elif not result.left_alone:
                extras.zips_done.append(str(zip_path))

        try:  # a rerun after the key file was written: the old key is the one saved beside the backup
            zip_keys = _default_old_keys(data_dir, list(old_keys), new_key) if data_dir else list(old_keys)
        except KeyrotateError:
            zip_keys = []
        results = RekeyReport(rekey_backups(find_backups(path.parent), zip_keys, new_key,
                                            encrypt_plaintext=encrypt_plaintext, dry_run=report.dry_run,
                                            on_each=each))
        extras.zips_left = len(results.left_alone)
        extras.json["backups"] = results.to_json()["results"]
        if results.results:
            _say(render(results, "text"), quiet=quiet)
        else:
            _say(f"No backup ZIPs in {path.parent / 'backups'}.", quiet=quiet)
        for result in results.left_alone:
            _warn(f"backup {result.path} was left as it is: {result.reason}")
    if not rekey and report.committed:
        _zips_left_under_old_key(report, path, data_dir, new_key_file, extras, quiet)
    if exposure is not None:
        exposure = dataclasses.replace(exposure, copies=find_exposed_copies(path, old_keys))
        extras.json["exposure"] = {"totals": totals(exposure), "groups": [g.to_json() for g in exposure.groups.lines()],
                                   "beyond": [f.to_json() for f in exposure.beyond]}
        extras.stdout = exposure_text(exposure)
    if report.committed:
        operator_steps(report, data_dir=data_dir, new_key_file=new_key_file, old_keys=old_keys, quiet=quiet,
                       extras=extras)
    return extras


def operator_steps(report: RotationReport, *, data_dir: Path | None, new_key_file: Path | None,
                   old_keys: Sequence[Key], quiet: bool, extras: RotationExtras) -> None:
    """What to do between the commit and a healthy TREK; printed even when the run is interrupted after it."""
    steps = next_steps(
        data_dir=data_dir, new_key_file=new_key_file, key_file_written=report.key_file_written is not None,
        shell_has_old_key=environment_holds(old_keys), backup=report.backup, old_key_saved=report.old_key_saved,
    )
    extras.json["operator_steps"] = steps
    _say("\n".join(f"Step: {step}" for step in steps), quiet=quiet)


def _zips_left_under_old_key(report: RotationReport, path: Path, data_dir: Path | None, new_key_file: Path | None,
                             extras: RotationExtras, quiet: bool) -> None:
    """Name TREK's backup ZIPs a rotation without --rekey-backups left under the old key, with the command
    that rekeys them now."""
    zips = find_backups(path.parent)
    if not zips:
        return
    command = ["keyrotate", "rekey-backup", *(str(z.absolute()) for z in zips)]
    saved = Path(report.old_key_saved) if report.old_key_saved else None
    if data_dir is not None:
        command += ["--data-dir", str(data_dir.absolute())]  # its key is now the new one
        if saved is not None and saved.parent.resolve() != path.parent.resolve():
            command += ["--old-key-file", str(saved.absolute())]  # found by default only next to travel.db
    else:
        command += ["--old-key-file", "OLD.key", "--new-key-file", str(new_key_file.absolute() if new_key_file else "NEW.key")]
    if saved is None and data_dir is not None:
        command += ["--old-key-file", "OLD.key"]
    where = f"saved at {saved}" if saved else "which keyrotate did not save: give it as OLD.key"
    line = shlex.join(command)
    extras.json["backups_under_old_key"] = {"zips": [str(z) for z in zips], "old_key_saved": report.old_key_saved,
                                            "rekey_command": line}
    _warn(f"{len(zips)} backup ZIP(s) stay under the old key ({where}): {', '.join(z.name for z in zips)}. "
          "Re-encrypt them now with:")
    _say(f"    {line}", quiet=quiet)


def jwt_after_rotation(report: RotationReport, data_dir: Path, *, audit: bool, wait: float,
                       quiet: bool) -> dict[str, Any]:
    """``rotate --rotate-jwt-secret``: once .encryption_key holds the new key, replace .jwt_secret."""
    if report.dry_run:
        _say(f"Would replace {data_dir / '.jwt_secret'} (signing every user out).", quiet=quiet)
        return {"replaced": False}
    saved = Path(f"{report.backup}.jwt_secret") if report.backup else _saved_jwt_name(data_dir)
    return _announce_jwt(rotate_jwt_secret(data_dir, saved, audit=audit, busy_timeout=wait), quiet)


def _saved_jwt_name(data_dir: Path) -> Path:
    return data_dir / f".jwt_secret.keyrotate-old-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"


def _announce_jwt(result: JwtRotation, quiet: bool) -> dict[str, Any]:
    if result.encryption_key_written:
        _say(f"This install encrypted with its session secret: {result.encryption_key_written} now holds that key, "
             "so TREK keeps reading its secrets once .jwt_secret changes.", quiet=quiet)
    _say(f"Replaced {result.jwt_secret} (mode 0600): every user is signed out at TREK's next start. The old "
         f"secret is saved in {result.saved_old}; delete it once TREK runs."
         + (" Recorded in TREK's audit log." if result.audit_logged else ""), quiet=quiet)
    return dataclasses.asdict(result) | {"replaced": True}


# -- new commands ------------------------------------------------------------


@main.command("rotate-jwt-secret", epilog=JWT_HELP)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="TREK's data directory.")
@click.option("--no-audit-log", is_flag=True, help="Do not record the rotation in TREK's audit_log table.")
@click.option("--allow-running", is_flag=True, help="Replace it even though another process has travel.db open.")
@wait_option
@quiet_option
def rotate_jwt_secret_command(data_dir: Path, no_audit_log: bool, allow_running: bool, wait: float,
                              quiet: bool) -> None:
    """Replace TREK's session-signing secret (data/.jwt_secret): signs every user out. Stop TREK first.

    Writes 32 new random bytes as hex (mode 0600, owner kept) and saves the old
    secret beside it. On an install that still encrypts with .jwt_secret (no
    .encryption_key), .encryption_key is written first with the key in use, so
    TREK keeps reading its secrets. Run it again after an interruption.
    """

    def action() -> int:
        if not data_dir.is_dir():
            raise InputNotFoundError(f"Data directory {data_dir} does not exist.")
        if (data_dir / "travel.db").is_file() and not allow_running:
            refuse_if_open_elsewhere(data_dir / "travel.db")
        result = rotate_jwt_secret(data_dir, _saved_jwt_name(data_dir), audit=not no_audit_log, busy_timeout=wait)
        _announce_jwt(result, quiet)
        return int(ExitCode.OK)

    _run(action)


@main.command(epilog=BACKUPS_HELP)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="TREK's data directory.")
@key_options("a key to try")
@format_option
def backups(data_dir: Path, key_file: tuple[Path, ...], key_env: tuple[str, ...], fmt: str) -> None:
    """List TREK's backup ZIPs and which keys open the secrets in each (all / some / none).

    Without --key-file/--key-env, tries the key TREK uses from DATA_DIR.
    Read-only: each travel.db is extracted to a private temporary directory
    and deleted again.
    """

    def action() -> int:
        if not data_dir.is_dir():
            raise InputNotFoundError(f"Data directory {data_dir} does not exist.")
        keys = _keys(key_file, key_env, "tried", _warn) or _trek_keys(data_dir, "current")
        listing = BackupListing(str(data_dir / "backups"), list_backups(data_dir, keys))
        click.echo(render(listing, fmt))
        return int(ExitCode.OK)

    _run(action)


@main.command("rekey-backup", epilog=REKEY_BACKUP_HELP)
@click.argument("zips", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="TREK's data directory. Default old keys: those rotate saved next to travel.db, and the key TREK "
                   "uses there; default new key: the key TREK uses there.")
@click.option("--old-key-file", type=click.Path(path_type=Path), multiple=True, help="File holding an old key. Repeatable.")
@click.option("--old-key-env", multiple=True, metavar="NAME", help="Environment variable holding an old key. Repeatable.")
@click.option("--new-key-file", type=click.Path(path_type=Path), help="File holding the new key.")
@click.option("--new-key-env", metavar="NAME", help="Environment variable holding the new key.")
@click.option("--encrypt-plaintext", is_flag=True, help="Also encrypt legacy plaintext, as rotate does.")
@click.option("--dry-run", is_flag=True, help="Check each ZIP and say what would happen; write nothing.")
@format_option
def rekey_backup(
    zips: tuple[Path, ...], data_dir: Path | None, old_key_file: tuple[Path, ...], old_key_env: tuple[str, ...],
    new_key_file: Path | None, new_key_env: str | None, encrypt_plaintext: bool, dry_run: bool, fmt: str,
) -> None:
    """Re-encrypt the travel.db inside TREK backup ZIPs under the new key.

    Same checks as `rotate` (all secrets open first, every new value read back,
    the whole database verified after the commit), done on a copy in a private
    temporary directory. The new ZIP replaces the old one atomically (mode 0600)
    with every other member byte-identical. A ZIP that cannot be fully opened is
    left as it is and named; the exit code is then 8.
    """

    def action() -> int:
        for path in zips:
            if not path.is_file():
                raise InputNotFoundError(f"Backup {path} does not exist or is not a file.")
        if new_key_file and new_key_env:
            raise click.UsageError("Give the new key once: --new-key-file or --new-key-env.")
        new_keys = _keys([new_key_file] if new_key_file else [], [new_key_env] if new_key_env else [], "new", _warn)
        old_keys = _keys(old_key_file, old_key_env, "old", _warn)
        # What TREK uses now (the new key after a rotation), needed only for what was not given.
        trek_key = _trek_keys(data_dir, "current") if not (new_keys and old_keys) else []
        old_keys = old_keys or _default_old_keys(
            data_dir, trek_key, new_keys[0] if new_keys else (trek_key[0] if trek_key else None))
        if not old_keys:
            old_keys = [_prompt_key("Old ENCRYPTION_KEY", "old", "--old-key-file FILE or --old-key-env NAME", confirm=False)]
        new_key = (new_keys or trek_key or [_prompt_key("New ENCRYPTION_KEY", "new",
                                                        "--new-key-file FILE or --new-key-env NAME", confirm=True)])[0]
        _check_new_key(new_key)
        rewritten: list[str] = []

        def each(index: int, total: int, result: RekeyResult | None, zip_path: Path) -> None:
            if result is None:
                _say(f"Backup ZIP {index} of {total}: {zip_path} ...")
            elif result.outcome == "rekeyed":
                rewritten.append(str(zip_path))

        try:
            report = RekeyReport(rekey_backups(zips, old_keys, new_key, encrypt_plaintext=encrypt_plaintext,
                                               dry_run=dry_run, on_each=each))
        except KeyboardInterrupt as interrupt:
            if not rewritten:
                raise stopped_before_commit(interrupt) from None
            raise InterruptedAfterCommitError(
                f"Interrupted ({signal_name(interrupt)}) after {len(rewritten)} ZIP(s) were re-encrypted: "
                f"{', '.join(rewritten)}. Every ZIP is whole, under one key. Run the same command again to "
                "finish: the ZIPs already under the new key are left as they are.") from None
        click.echo(render(report, fmt))
        return int(ExitCode.UNDECRYPTABLE if report.left_alone else ExitCode.OK)

    _run(action)


def _default_old_keys(data_dir: Path | None, trek_key: list[Key], new_key: Key | None) -> list[Key]:
    """With --data-dir: the old keys keyrotate saved next to the database, then the key TREK uses,
    leaving out the new key (after a rotation the key TREK uses is the new one)."""
    if data_dir is None:
        return []
    found: list[Key] = []
    for key in [*saved_old_keys(data_dir / "travel.db"), *trek_key]:
        if not any(key.same_secret_as(k) for k in (*found, *([new_key] if new_key else []))):
            found.append(key)
    if not found:
        raise KeyProblemError(f"The key TREK uses from {data_dir} is the new key and no saved old key "
                              "(travel.db.keyrotate-*.key) is next to the database. Give the key the ZIPs were made "
                              "under with --old-key-file.")
    return found


@main.command(epilog=EXPOSURE_HELP)
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
        path = _database(db, data_dir)
        keys = _keys(key_file, key_env, "suspected", _warn) or _trek_keys(data_dir, "suspected")
        if not keys:
            keys = [_prompt_key("Suspected ENCRYPTION_KEY", "suspected", "--key-file FILE or --key-env NAME",
                               confirm=False)]
        progress = _progress(fmt == "json", quiet)
        # sys.stdout is block-buffered when redirected to a file; click's stream flushes every line,
        # a write(2) per record (370,000 secrets as CSV: 11 s instead of 5 s).
        out = sys.stdout
        # JSON and CSV records go out while the pass runs: memory stays flat however many secrets there are.
        writer = ExposureWriter(out, fmt, str(path), (k.source for k in keys))
        writer.begin()
        try:
            report = find_exposure(path, keys, busy_timeout=wait, progress=progress.callback(),
                                   check_copies=not no_copies, keep_secrets=False,
                                   # text and markdown are written from the group counts: no record per secret
                                   on_secret=writer.secret if fmt in ("json", "csv") else None,
                                   data_dir=data_dir)
        finally:
            progress.close()
        writer.end(report)
        out.flush()
        _say(f"{report.exposed} secret(s) to revoke or reissue; {len(report.copies)} old copy(ies) flagged.",
             quiet=quiet or fmt == "text")
        return int(ExitCode.OK)

    _run(action)


@main.command(epilog=AUDIT_HELP)
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
        report = audit_database(_database(db, data_dir), busy_timeout=wait)
        click.echo(render(report, fmt))
        return int(ExitCode.OK)

    _run(action)
