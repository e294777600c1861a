"""The steps ``rotate`` takes around the engine: --generate-new-key, --incident, --rekey-backups, operator steps."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keyrotate.cli.incident import this_runs_backup
from keyrotate.cli.inputs import kept_old_keys
from keyrotate.cli.interrupted import rerun_command, stopped_before_commit
from keyrotate.cli.render import render
from keyrotate.cli.rotate_args import RotateArgs, RotationRun
from keyrotate.cli.running import say, warn
from keyrotate.errors import KeyProblemError, KeyrotateError
from keyrotate.rotation.old_key import committed_under, environment_holds, generate_new_key
from keyrotate.rotation.operator_steps import next_steps
from keyrotate.rotation.plan import RotationPlan
from keyrotate.rotation.report import RotationReport
from keyrotate.trek.catalogue import Presence
from keyrotate.trek.keys import Key, key_from_file

if TYPE_CHECKING:
    from keyrotate.operations.backup_rekey import RekeyResult
    from keyrotate.operations.exposure import ExposureReport

# The steps below import the ZIP operations when they run: a plain rotate (and --help) does not pay for them.


def new_key_for_rotation(args: RotateArgs, path: Path, old: Sequence[Key]) -> tuple[Key, bool] | None:
    """With --generate-new-key, the new key, already on disk, and whether an earlier run made it; None otherwise."""
    out, file, env = args.new_key_out, args.new_key_file, args.new_key_env
    if not args.generate_new_key:
        if out is not None:
            raise click.UsageError("--new-key-out only goes with --generate-new-key.")
        return None
    if file or env:
        raise click.UsageError("--generate-new-key makes the new key; do not also give --new-key-file/--new-key-env.")
    if out is None:
        raise click.UsageError("--generate-new-key needs --new-key-out FILE, where the key is saved before anything else.")
    if out.is_file() and not out.is_symlink():
        return _key_of_earlier_run(out, path, old, args.wait), True
    try:
        key = generate_new_key(out)
    except KeyboardInterrupt as interrupt:
        raise stopped_before_commit(interrupt, out if out.exists() else None) from None
    say(f"Generated the new key into {out} (mode 0600) before touching the database. Keep it: it is the only copy.")
    return key, False


def _key_of_earlier_run(out: Path, path: Path, old: Sequence[Key], wait: float) -> Key:
    """--new-key-out names an existing file: never overwritten. Its key is used only when the database is under
    it already (the same command, killed after its commit, run again as it says); otherwise a refusal that says
    what to do."""
    refusal = KeyProblemError(
        f"{out} already exists; keyrotate will not overwrite a key file. The database is not under the key in it. "
        f"To rotate to that key, give --new-key-file {out} instead of --generate-new-key and --new-key-out; "
        "for a fresh key, choose another --new-key-out path. Nothing was changed.")
    try:
        key, warnings = key_from_file(out, "new")
    except KeyProblemError:
        raise refusal from None
    if not committed_under(path, key, old, busy_timeout=wait):
        raise refusal
    for warning in warnings:
        warn(warning)
    say(f"{out} already exists and the database's secrets are already under the key in it: an earlier run of "
        f"this command committed. Finishing that run with the key from {out} (the file is left as it is).")
    return key


def new_key_note(error: KeyrotateError, out: Path) -> KeyrotateError:
    """What to do with the key this run generated: before the COMMIT it was not used, after it the secrets need it."""
    if error.committed:
        noted = type(error)(f"{error.message}\nThe secrets are now under the new key in {out}: keep that file.")
        noted.committed = True
        return noted
    return type(error)(f"{error.message}\nThe new key in {out} was not used; delete it, or reuse it with "
                       f"--new-key-file {out}.")


def confirm_plan(plan: RotationPlan) -> bool:
    """The plan on stderr, then the question: a key typed at the prompt gets a look before anything is written."""
    click.echo("Plan:", err=True)
    for loc in plan.locations:
        if loc.catalogued and loc.presence is Presence.ACTIVE and loc.tokens:
            click.echo(f"  {loc.label}: {loc.tokens} secret(s)", err=True)
        elif not loc.catalogued and loc.tokens - loc.unopened:
            click.echo(f"  {loc.label}: {loc.tokens - loc.unopened} secret(s) found outside the catalogue", err=True)
    click.echo(
        f"{plan.to_rotate} secret(s) to re-encrypt, {plan.already_new} already under the new key"
        + (f", {plan.to_encrypt} plaintext value(s) to encrypt" if plan.to_encrypt else "")
        + (f", {plan.failed} left as they are (open under no key)" if plan.failed else "")
        + ".",
        err=True,
    )
    try:
        return click.confirm("Back up the database and rotate now?", default=False, err=True)
    except click.Abort:  # Ctrl-C or end of input at the question: a no, not click's "Aborted!"
        click.echo("", err=True)
        return False


def free_backup_name(db: Path) -> Path:
    """``travel.db.keyrotate-backup-<time>``, with a counter if a run in the same second made one."""
    base = db.with_name(f"{db.name}.keyrotate-backup-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    candidate, n = base, 1
    while os.path.lexists(candidate):  # a planted link counts as taken: the backup never goes through it
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


@dataclass
class RotationExtras:
    """What the steps around the engine add: members of rotate's JSON report, the checklist, the backup ZIPs."""

    json: dict[str, Any] = field(default_factory=dict)
    exposure: ExposureReport | None = None  # --incident: the checklist for stdout
    zips_done: list[str] = field(default_factory=list)  # backup ZIPs finished (rekeyed, or already on the new key)
    zips_left: int = 0  # backup ZIPs left as they are
    exit_code: int = 0
    finished: bool = False  # the report is written: a signal after that stops nothing
    jwt_secret_before: bytes | None = field(default=None, repr=False)  # --rotate-jwt-secret: .jwt_secret before

    @property
    def jwt_replaced(self) -> bool:
        return bool(self.json.get("jwt_secret", {}).get("replaced"))

    def jwt_secret_left(self, data_dir: Path | None) -> bool:
        """--rotate-jwt-secret stopped before .jwt_secret changed: the file itself says, not just the step's result."""
        if data_dir is None or self.jwt_replaced:
            return False
        try:
            return self.jwt_secret_before in (None, (data_dir / ".jwt_secret").read_bytes())
        except OSError:
            return True


@dataclass(frozen=True)
class RotationOutcome:
    """rotate's JSON report: the engine's report and what the extra steps did."""

    report: RotationReport
    extras: RotationExtras

    def to_json(self) -> dict[str, Any]:
        return {**self.report.to_json(), **self.extras.json}


def finish_rotation(rotation: RotationRun, report: RotationReport, extras: RotationExtras) -> None:
    """What follows the engine's report: backup ZIPs, the operator's steps."""
    if rotation.args.rekey_backups:
        _rekey_zips(rotation, report, extras)
    elif report.committed:
        _zips_left_under_old_key(rotation, report, extras)
    if report.committed:
        operator_steps(rotation, report, extras)


def _rekey_zips(rotation: RotationRun, report: RotationReport, extras: RotationExtras) -> None:
    """--rekey-backups: TREK's backup ZIPs next to the database, under the new key too."""
    from keyrotate.operations.backup_rekey import RekeyOutcome, RekeyReport, rekey_backups  # --rekey-backups only
    from keyrotate.operations.backup_zips import find_backups

    quiet, data_dir = rotation.args.silent, rotation.args.data_dir
    old_keys, new_key = rotation.keys.old, rotation.keys.new

    def each(index: int, total: int, result: RekeyResult | None, zip_path: Path) -> None:
        if result is None:
            say(f"Backup ZIP {index} of {total}: {zip_path} ...", quiet=quiet)
        elif not result.left_alone:
            extras.zips_done.append(str(zip_path))

    # A rerun after the key file was written: the old key is the one saved beside the backup (PATH.key too).
    zip_keys = kept_old_keys(data_dir, list(old_keys), new_key, this_runs_backup(rotation))
    path = rotation.path
    results = RekeyReport(rekey_backups(find_backups(path.parent), zip_keys, new_key,
                                        encrypt_plaintext=rotation.args.encrypt_plaintext, dry_run=report.dry_run,
                                        on_each=each, notice=lambda line: say(line, quiet=quiet)))
    extras.zips_left = len(results.left_alone)
    extras.json["backups"] = results.to_json()["results"]
    if results.results:
        say(render(results, "text"), quiet=quiet)
    else:
        say(f"No backup ZIPs in {path.parent / 'backups'}.", quiet=quiet)
    for result in results.left_alone:
        warn(f"backup {result.path} was left as it is: {result.reason}")
    under_new = [Path(r.path) for r in results.results if r.outcome in (RekeyOutcome.REKEYED, RekeyOutcome.ALREADY_NEW)]
    if report.restore_command and under_new:
        _zips_after_a_restore(rotation, report, under_new, extras)


def _zips_after_a_restore(rotation: RotationRun, report: RotationReport, zips: list[Path],
                          extras: RotationExtras) -> None:
    """The restore command puts travel.db (and .encryption_key) back on the old key, not the ZIPs: say so, and
    give the command that puts them back under the old key too."""
    args, new_key_file = rotation.args, rotation.new_key_file
    command = ["keyrotate", "rekey-backup", *(str(z.absolute()) for z in zips)]
    if new_key_file is not None:
        command += ["--old-key-file", str(new_key_file.absolute())]
    elif args.new_key_env:
        command += ["--old-key-env", args.new_key_env]
    else:
        command += ["--old-key-file", "NEW.key"]  # the new key was typed: only its owner has it
    if args.data_dir is not None and report.old_key_saved:
        command += ["--data-dir", str(args.data_dir.absolute())]  # restored, .encryption_key holds the old key
    else:
        flag, value = _old_key_words(rotation)  # the old key is the one the ZIPs go back under
        command += ["--new-key-file", str(Path(report.old_key_saved).absolute())] if report.old_key_saved else \
            [flag.replace("--old-", "--new-"), value]
    line = shlex.join(command)
    extras.json["backups_after_restore_command"] = line
    say(f"The restore command above puts the database{' and the key' if report.old_key_saved else ''} back on the "
        f"old key, not the backup ZIPs: {len(zips)} of them are now under the new key, which a restored TREK does "
        "not use (`keyrotate backups` then shows them as \"none\"). After restoring, put them back under the old "
        f"key with:\n    {line}", quiet=args.silent)


def operator_steps(rotation: RotationRun, report: RotationReport, extras: RotationExtras) -> None:
    """What to do between the commit and a healthy TREK; printed even when the run is interrupted after it."""
    steps = next_steps(
        data_dir=rotation.args.data_dir, db_path=rotation.path, new_key_file=rotation.new_key_file,
        key_file_written=report.key_file_written is not None, shell_has_old_key=environment_holds(rotation.keys.old),
        backup=report.backup, old_key_saved=report.old_key_saved, left_unopened=report.failed,
    )
    extras.json["operator_steps"] = steps
    say("\n".join(f"Step: {step}" for step in steps), quiet=rotation.args.silent)


def _zips_left_under_old_key(rotation: RotationRun, report: RotationReport, extras: RotationExtras) -> None:
    """Name TREK's backup ZIPs a rotation without --rekey-backups left under the old key, with the command
    that rekeys them now."""
    from keyrotate.operations.backup_zips import find_backups  # after a commit only: not for dry runs or failures

    path, data_dir, new_key_file = rotation.path, rotation.args.data_dir, rotation.new_key_file
    zips = _not_under(find_backups(path.parent), rotation.keys.new) if _same_key_run(rotation) else \
        find_backups(path.parent)
    if not zips:
        return
    command = ["keyrotate", "rekey-backup", *(str(z.absolute()) for z in zips)]
    saved = Path(report.old_key_saved) if report.old_key_saved else None
    old_key = _old_key_words(rotation)
    if data_dir is not None:
        command += ["--data-dir", str(data_dir.absolute())]  # its key is now the new one
        if saved is not None and saved.parent.resolve() != path.parent.resolve():
            command += ["--old-key-file", str(saved.absolute())]  # found by default only next to travel.db
        elif saved is None:
            command += old_key
    else:
        command += [*old_key, "--new-key-file", str(new_key_file.absolute() if new_key_file else "NEW.key")]
    if saved:
        where = f"saved at {saved}"
    elif old_key[-1] == "OLD.key":
        where = "which keyrotate did not save: give it as OLD.key"
    else:
        where = "which keyrotate did not save: the command reads it where you gave it"
    line = shlex.join(command)
    extras.json["backups_under_old_key"] = {"zips": [str(z) for z in zips], "old_key_saved": report.old_key_saved,
                                            "rekey_command": line}
    # Not opened here (seconds per ZIP): ZIPs re-encrypted before the rotation, as the README allows, are under
    # the new key already; rekey-backup skips those.
    listing = shlex.join(["keyrotate", "backups", "--data-dir", str(data_dir.absolute())]) if data_dir else ""
    warn(f"{len(zips)} backup ZIP(s) were not re-encrypted by this run and stay under the old key ({where}) unless "
         f"you re-encrypted them before it{f' ({listing} says which)' if listing else ''}: "
         f"{', '.join(z.name for z in zips)}. Re-encrypt them now with:")
    say(f"    {line}", quiet=rotation.args.silent)


def _old_key_words(rotation: RotationRun) -> list[str]:
    """How a printed command gives the old key: where this run read it from, else the placeholder OLD.key (a key
    typed at the prompt, or a key file this run replaced without saving it)."""
    args = rotation.args
    if args.old_key_file:
        return ["--old-key-file", str(args.old_key_file[0].absolute())]
    if args.old_key_env:
        return ["--old-key-env", args.old_key_env[0]]
    return ["--old-key-file", "OLD.key"]


def _same_key_run(rotation: RotationRun) -> bool:
    """The new key is one of the old ones (--encrypt-plaintext on the key in use): ZIPs may already be under it."""
    return any(rotation.keys.new.same_secret_as(old) for old in rotation.keys.old)


def _not_under(zips: list[Path], key: Key) -> list[Path]:
    """The ZIPs whose secrets ``key`` does not all open (one unreadable counts as not under it)."""
    from keyrotate.operations.backup_zips import Opens, inspect_backup  # a same-key run only

    left = []
    for zip_path in zips:
        status = inspect_backup(zip_path, [key])
        if status.problem or status.keys[0].opens not in (Opens.ALL, Opens.NO_SECRETS):
            left.append(zip_path)
    return left


def notice_with_rerun(generated: Path | None) -> Callable[[str], None]:
    """The engine's notices; with --generate-new-key (``generated``: where the key was saved), "run the same
    command again" names the command that works (the same command would refuse to generate over that file)."""
    if generated is None:
        return say
    again = f"run this command: {rerun_command(generated)}"
    return lambda line: say(line.replace("run the same command again", again))
