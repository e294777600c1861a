"""The ``rotate`` command: its options become RotateOptions, the engine runs, the report is rendered."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keyrotate import interrupts
from keyrotate.cli.incident import (
    incident_after,
    incident_before,
    incident_despite_failure,
    incident_final,
    incident_json,
    show_despite_failure,
)
from keyrotate.cli.inputs import (
    check_new_key,
    database,
    given_keys,
    old_keys_beside_trek,
    prompt_key,
    trek_key_besides,
)
from keyrotate.cli.interrupted import rerun_command, signal_name, stopped_after_commit, stopped_before_commit
from keyrotate.cli.options import (
    EXIT_CODES_HELP,
    KEY_FILE,
    data_dir_option,
    db_option,
    json_option,
    quiet_option,
    wait_option,
    workers_option,
)
from keyrotate.cli.progress import progress_bars
from keyrotate.cli.render import emit, render
from keyrotate.cli.rotate_args import RotateArgs, RotationKeys, RotationRun
from keyrotate.cli.rotate_guards import refuse_contradictions, warn_if_the_new_key_is_in_use
from keyrotate.cli.rotate_steps import (
    RotationExtras,
    RotationOutcome,
    confirm_plan,
    finish_rotation,
    free_backup_name,
    new_key_for_rotation,
    new_key_note,
    notice_with_rerun,
    operator_steps,
)
from keyrotate.cli.running import run, say, stdout_lost, warn
from keyrotate.cli.wrong_key import wrong_key_hints
from keyrotate.errors import ExitCode, KeyrotateError
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.old_key import environment_holds
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.report import RotationReport
from keyrotate.rotation.revoke import Revocation

if TYPE_CHECKING:
    from keyrotate.operations.exposure import ExposureReport


@click.command(epilog=EXIT_CODES_HELP)
@db_option
@data_dir_option
@click.option("--old-key-file", type=KEY_FILE, multiple=True,
              help="File holding an old key (trimmed, like TREK reads .encryption_key). Repeat for several old keys. "
                   "With --data-dir, tried after the key TREK uses there, not instead of it.")
@click.option("--old-key-env", multiple=True, metavar="NAME",
              help="Environment variable holding an old key (used as is). Repeatable. With --data-dir, tried after "
                   "the key TREK uses there.")
@click.option("--new-key-file", type=KEY_FILE, help="File holding the new key.")
@click.option("--new-key-env", metavar="NAME", help="Environment variable holding the new key.")
@click.option("--backup", "backup_path", type=click.Path(path_type=Path),
              help="Where to write the backup. Default: next to the database, named with the time.")
@click.option("--no-backup", is_flag=True, help="Do not back up first. Only if you have your own backup.")
@click.option("--discard-old-key", is_flag=True,
              help="Do not save the old key from data/.encryption_key before replacing it. Default: it is saved "
                   "beside the backup as <backup>.key (0600), since backups and backup ZIPs open only with it. "
                   "Not with --rekey-backups.")
@click.option("--dry-run", is_flag=True,
              help="Do everything except the backup, then roll back: the database is not changed and no backup is "
                   "made. Only --generate-new-key still saves the new key to --new-key-out, so the real run can "
                   "reuse it with --new-key-file.")
@click.option("--skip-undecryptable", is_flag=True,
              help="Leave values that open under no key as they are and rotate the rest.")
@click.option("--encrypt-plaintext", is_flag=True,
              help="Also encrypt legacy plaintext found where this TREK version expects ciphertext.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before writing.")
@click.option("--allow-running", is_flag=True,
              help="Rotate even though another process (TREK?) has the database open. Only if it never writes secrets.")
@click.option("--vacuum/--no-vacuum", default=True, show_default=True,
              help="Rebuild the database file after the commit, so no unused space still holds old ciphertexts.")
@click.option("--generate-new-key", is_flag=True,
              help="Generate the new key and save it to --new-key-out FILE before the database is touched.")
@click.option("--new-key-out", type=click.Path(path_type=Path), help="New file for --generate-new-key (mode 0600).")
@click.option("--rekey-backups", is_flag=True,
              help="Also re-encrypt TREK's backup ZIPs in the database's backups/ directory.")
@click.option("--incident", is_flag=True,
              help="The old key leaked: print the checklist of secrets it opened and of copies still under it.")
@click.option("--rotate-jwt-secret", is_flag=True,
              help="After the rotation, replace data/.jwt_secret too (signs every user out). Needs --data-dir.")
@click.option("--no-audit-log", is_flag=True, help="Do not record the rotation in TREK's audit_log table.")
@click.option("--revoke-share-links", is_flag=True,
              help="Also delete every public trip and journey share link (plaintext tokens), in the rotation's "
                   "transaction. With --dry-run: only count them.")
@click.option("--expire-invites", is_flag=True,
              help="Also make every open registration invite unusable (deletes the unused, unexpired ones), in the "
                   "rotation's transaction. With --dry-run: only count them.")
@wait_option
@workers_option
@json_option
@quiet_option
def rotate(**params: Any) -> None:
    """Re-encrypt every secret in the database under a new key. Stop TREK first.

    All or nothing: every value is re-encrypted in one transaction and each new
    value is checked before it is written; if any catalogued secret opens under
    none of the keys, everything is rolled back and nothing changes. Before the
    first write the database is backed up (mode 0600, through SQLite, so nothing
    waiting in travel.db-wal is lost). After the commit every secret is read
    back on a fresh connection and must be exactly the text that was checked,
    and with --data-dir the new key is
    written to data/.encryption_key. Run it again after any interruption: it
    finishes the job.
    """
    args = RotateArgs(**params)
    run(lambda: _rotate(args))


def _rotate(args: RotateArgs) -> int:
    """The keys, the engine, then everything after it (see _finish); exit 13 if a signal stops that part."""
    path = database(args.db, args.data_dir)
    refuse_contradictions(args, path)
    rotation = RotationRun(args, path, _rotation_keys(args, path))
    warn_if_the_new_key_is_in_use(rotation)
    report, stopped_by, exposure = _run_engine(rotation, _rotate_options(rotation))
    extras = RotationExtras()
    why = f"Interrupted ({stopped_by})"
    try:
        if stopped_by is None:
            return _finish(rotation, report, exposure, extras)
    except KeyboardInterrupt as interrupt:
        if report.dry_run:
            raise  # nothing was written: the plain "interrupted" is true
        if extras.finished:  # the last byte of the report was out: the run had done everything
            return extras.exit_code
        why = f"Interrupted ({signal_name(interrupt)})"
    except (KeyrotateError, OSError) as error:  # past the engine the database is rotated: never "nothing changed"
        if report.dry_run or (isinstance(error, KeyrotateError) and error.committed):
            raise
        reason = (error.message if isinstance(error, KeyrotateError) else
                  f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else ""))
        why = f"Stopped by an error ({reason})"
    raise _stopped_after_commit(rotation, report, why, exposure, extras)


def _finish(rotation: RotationRun, report: RotationReport, exposure: ExposureReport | None,
            extras: RotationExtras) -> int:
    """The summary, backup ZIPs, the checklist, the operator's steps, the JWT secret, the JSON; the exit code."""
    args = rotation.args
    # After a commit the summary leaves out the report's next steps: finish_rotation prints fuller operator steps.
    say(render(report, "text"), quiet=args.silent)
    finish_rotation(rotation, report, extras)
    if args.rotate_jwt_secret and args.data_dir is not None:
        _replace_jwt_secret(rotation, report, args.data_dir, exposure, extras)
    if exposure is not None:  # the copies are looked at last: .jwt_secret replaced, the old one saved beside the backup
        extras.exposure = incident_final(rotation, report, incident_after(rotation, exposure),
                                         jwt_replaced=extras.jwt_replaced)
        extras.json["exposure"] = incident_json(extras.exposure)
    extras.exit_code = int(ExitCode.UNDECRYPTABLE if extras.zips_left else ExitCode.OK)
    with interrupts.held_back():  # the report comes out whole; a signal meanwhile arrives once all is done
        if args.json_output:
            emit(RotationOutcome(report, extras), "json")
        elif extras.exposure is not None:
            emit(extras.exposure, "text")
        extras.finished = True
    return extras.exit_code


def _replace_jwt_secret(rotation: RotationRun, report: RotationReport, data_dir: Path,
                        exposure: ExposureReport | None, extras: RotationExtras) -> None:
    """--rotate-jwt-secret, once the rotation is done; if it fails, --incident's checklist is still printed first."""
    from keyrotate.cli.jwt_secret import jwt_after_rotation  # --rotate-jwt-secret only: a plain rotate skips it

    args = rotation.args
    with suppress(OSError):
        extras.jwt_secret_before = (data_dir / ".jwt_secret").read_bytes()
    try:
        extras.json["jwt_secret"] = jwt_after_rotation(report, data_dir, audit=not args.no_audit_log,
                                                       wait=args.wait, quiet=args.silent)
    except KeyrotateError as error:  # after the commit: the checklist must not be lost with the run's end
        if exposure is not None:
            _checklist_despite(rotation, report, incident_after(rotation, exposure), error, jwt_replaced=False)
        raise


def _rotation_keys(args: RotateArgs, path: Path) -> RotationKeys:
    """The old keys (given, TREK's, or typed) and the new key (generated, given, or typed twice)."""
    interactive = False
    given_old = given_keys(args.old_key_file, args.old_key_env, "old")
    trek_key = trek_key_besides(args.data_dir, given_old, jwt_secret_replaced=args.rotate_jwt_secret)
    old = old_keys_beside_trek(trek_key, given_old, None)
    if not old:
        old = [prompt_key("Old ENCRYPTION_KEY", "old", "--old-key-file FILE or --old-key-env NAME", confirm=False)]
        interactive = True
    generated = new_key_for_rotation(args, path, old)
    given = given_keys([args.new_key_file] if args.new_key_file else [],
                       [args.new_key_env] if args.new_key_env else [], "new")
    if generated is not None:
        new = generated[0]
    elif given:
        new = given[0]
    else:
        new = prompt_key("New ENCRYPTION_KEY", "new", "--new-key-file FILE or --new-key-env NAME", confirm=True)
        interactive = True
    check_new_key(new, path)
    old = old_keys_beside_trek(trek_key, given_old, new) if given_old else old
    if environment_holds(old):
        warn("ENCRYPTION_KEY in this shell holds the old key. Change or unset it wherever TREK runs.")
    return RotationKeys(old, new, generated=generated is not None, interactive=interactive,
                        reused=generated is not None and generated[1])


def _rotate_options(rotation: RotationRun) -> RotateOptions:
    args, keys = rotation.args, rotation.keys
    backup = None
    if not args.dry_run and not args.no_backup:
        backup = args.backup_path or free_backup_name(rotation.path)
    return RotateOptions(
        db_path=rotation.path, old_keys=tuple(keys.old), new_key=keys.new, backup_path=backup, dry_run=args.dry_run,
        skip_undecryptable=args.skip_undecryptable, encrypt_plaintext=args.encrypt_plaintext, busy_timeout=args.wait,
        key_file=(args.data_dir / ".encryption_key") if args.data_dir is not None else None,
        allow_running=args.allow_running, vacuum=args.vacuum, workers=args.workers,
        save_old_key=not args.discard_old_key, audit_log=not args.no_audit_log,
        fallback_key_file=(args.data_dir / ".jwt_secret") if args.rotate_jwt_secret and args.data_dir else None,
        revoke=Revocation(share_links=args.revoke_share_links, invites=args.expire_invites),
    )


def _run_engine(rotation: RotationRun,
                options: RotateOptions) -> tuple[RotationReport, str | None, ExposureReport | None]:
    """The engine's report, the signal that stopped the run after its commit (if one did), and --incident's list."""
    args = rotation.args
    confirm = confirm_plan if rotation.keys.interactive and not args.yes and not args.dry_run else None
    progress = progress_bars(args.json_output, args.silent)
    exposure = None
    try:
        exposure = incident_before(rotation)
        report = rotate_database(options, progress=progress.callback(), confirm=confirm,
                                 notice=notice_with_rerun(rotation.generated_key_file))
    except KeyrotateError as error:
        incident_despite_failure(exposure, rotation, error)
        key = rotation.new_key_file if error.committed else rotation.unused_new_key
        error = wrong_key_hints(error, rotation)
        raise (new_key_note(error, key) if key else error) from None
    except interrupts.Interrupted as interrupt:
        if interrupt.report is None:
            raise stopped_before_commit(interrupt, rotation.unused_new_key) from None
        return interrupt.report, signal_name(interrupt), exposure
    finally:
        progress.close()
    return report, None, exposure


def _stopped_after_commit(rotation: RotationRun, report: RotationReport, why: str,
                          exposure: ExposureReport | None, extras: RotationExtras) -> KeyrotateError:
    """Exit 13: what is done, what is left (ZIPs, .jwt_secret), the command that finishes it, and the checklist."""
    if "operator_steps" not in extras.json:  # the steps for TREK still apply
        operator_steps(rotation, report, extras)
    left: list[str] = []
    if rotation.args.rekey_backups:
        from keyrotate.operations.backup_zips import find_backups  # an interrupted --rekey-backups only

        done = set(extras.zips_done)
        zips = [str(z) for z in find_backups(rotation.path.parent) if str(z) not in done]
        if zips:
            left.append(f"{len(zips)} backup ZIP(s) still under the old key, each whole: {', '.join(zips)}")
    jwt_left = rotation.args.rotate_jwt_secret and extras.jwt_secret_left(rotation.args.data_dir)
    if jwt_left:
        left.append(f"{rotation.path.parent / '.jwt_secret'} still holds the old session secret")
    finished = frozenset() if jwt_left or not rotation.args.rotate_jwt_secret else frozenset({"rotate_jwt_secret"})
    error = stopped_after_commit(why, report, left=left, rerun=rerun_command(rotation.generated_key_file,
                                                                                done=finished))
    if exposure is not None:  # read before the rotation (the rerun reads it from the backup, when there is one)
        _checklist_despite(rotation, report, extras.exposure or exposure, error,
                           jwt_replaced=not jwt_left and rotation.args.rotate_jwt_secret)
    return error


def _checklist_despite(rotation: RotationRun, report: RotationReport, checklist: ExposureReport,
                       error: KeyrotateError, *, jwt_replaced: bool) -> None:
    """--incident's checklist of a run stopped after its commit, headed as such; stdout itself may be what failed."""
    try:
        show_despite_failure(incident_final(rotation, report, checklist, jwt_replaced=jwt_replaced), rotation, error,
                             committed=True)
    except OSError as exc:  # a full disk under `> checklist.txt`
        stdout_lost(exc)
