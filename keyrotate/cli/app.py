"""The ``keyrotate`` command. Owns prompts, progress bars, output and exit codes;
everything else lives in the library modules it calls."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from keyrotate import __version__, interrupts
from keyrotate.cli.interrupted import rerun_command, signal_name, stopped_after_commit, stopped_before_commit
from keyrotate.errors import ExitCode, KeyrotateError
from keyrotate.operations.backup_zips import find_backups
from keyrotate.rotation.engine import RotateOptions, RotationPlan, rotate_database, verify_database
from keyrotate.rotation.old_key import environment_holds, fallback_explanation
from keyrotate.rotation.report import printable, render_rotation, render_verify
from keyrotate.rotation.revoke import Revocation
from keyrotate.rotation.scanning import ProgressCallback
from keyrotate.store.database import locate_database
from keyrotate.trek.keys import (
    Key,
    create_key_file,
    generate_key_text,
    key_from_env,
    key_from_file,
    new_key_warnings,
    refuse_unreadable_new_key,
    resolve_trek_key,
)

EXIT_CODES_HELP = """\b
Exit codes:
  0  success                       7  old key opens none of the secrets
  1  internal error (a bug)        8  some secrets open under no key (nothing written), or a ZIP left as it is
  2  usage error                   9  verification failed
  3  file or directory not found  10  database in use (stop TREK)
  4  not SQLite, or damaged       11  cannot write (read-only, disk full, backup)
  5  SQLite, but not TREK's       12  cancelled or interrupted; nothing written
  6  unusable key (empty, same as the other, unreadable key file)
 13  interrupted after the commit: rotated; run the same command again to finish
"""


def exit_codes_help(meanings: dict[int, str]) -> str:
    """A command's own exit-code epilog: only the codes it can return, in its own words."""
    common = {1: "internal error (a bug)", 2: "usage error", 12: "cancelled or interrupted; nothing written"}
    rows = sorted({**common, **meanings}.items())
    return "\b\nExit codes:\n" + "".join(f"  {code:>2}  {meaning}\n" for code, meaning in rows)


def _say(message: str, *, quiet: bool = False) -> None:
    if not quiet and not _quiet_requested():
        click.echo(message, err=True)


def _quiet_requested() -> bool:
    """The running command was given --quiet: stderr then carries errors only, warnings included."""
    context = click.get_current_context(silent=True)
    return context is not None and bool(context.params.get("quiet"))


def _warn(message: str) -> None:
    _say(f"WARNING: {message}")


class Progress:
    """tqdm bars on stderr, one per location, only when a person is watching."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._current: tuple[str, str] | None = None

    def __call__(self, phase: str, label: str, advanced: int, total: int | None) -> None:
        from tqdm import tqdm

        if (phase, label) != self._current:
            self.close()
            self._current = (phase, label)
            self._bar = tqdm(total=total, desc=f"{phase}: {label}", unit=" values", leave=False,
                             file=sys.stderr, dynamic_ncols=True)
        if advanced:
            self._bar.update(advanced)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def callback(self) -> ProgressCallback | None:
        return self if self.enabled else None


def _progress(json_output: bool, quiet: bool) -> Progress:
    return Progress(enabled=sys.stderr.isatty() and not json_output and not quiet)


def _fail(error: KeyrotateError) -> NoReturn:
    # Messages name tables, rows and paths found in the database: no control character gets through.
    click.echo("Error: " + "\n".join(printable(line) for line in error.message.split("\n")), err=True)
    sys.exit(int(error.exit_code))


def _run(action: Callable[[], int]) -> NoReturn:
    """One boundary for every command: library errors become messages and exit codes."""
    previous = interrupts.install()  # SIGTERM and SIGHUP unwind like Ctrl-C: every finally runs
    try:
        code = action()
    except KeyrotateError as error:
        _fail(error)
    except KeyboardInterrupt as interrupt:  # commands that write turn this into what they had done
        _fail(stopped_before_commit(interrupt))
    except OSError as error:
        # Reported by kind only: paths are safe, but keep keyrotate's rule of no raw payloads.
        click.echo(f"Error: {error.strerror or type(error).__name__} ({getattr(error, 'filename', '') or ''})", err=True)
        sys.exit(int(ExitCode.CANNOT_WRITE))
    finally:
        interrupts.restore(previous)
    sys.exit(code)


def _database(db: Path | None, data_dir: Path | None) -> Path:
    if (db is None) == (data_dir is None):
        raise click.UsageError("Give exactly one of --db PATH or --data-dir DIR.")
    return locate_database(db, data_dir)


def _keys(files: Sequence[Path], envs: Sequence[str], label: str, warn: Callable[[str], None]) -> list[Key]:
    keys = []
    for path in files:
        key, warnings = key_from_file(path, label)
        for warning in warnings:
            warn(warning)
        keys.append(key)
    keys.extend(key_from_env(name, label) for name in envs)
    return keys


def _trek_keys(data_dir: Path | None, purpose: str | None = None) -> list[Key]:
    """The key TREK would use from ``data_dir`` (none without one), with what the operator should know about it.

    ``purpose`` relabels the key in reports ("suspected key TREK uses from DIR").
    """
    if data_dir is None:
        return []
    resolution = resolve_trek_key(data_dir)
    explanation = fallback_explanation(resolution)
    if explanation:
        _warn(explanation)
    for warning in resolution.warnings:
        _warn(warning)
    if purpose is None:
        return [resolution.key]
    return [dataclasses.replace(resolution.key, source=f"{purpose} key TREK uses from {data_dir}")]


def _prompt_key(prompt: str, label: str, options_hint: str, *, confirm: bool) -> Key:
    """Ask on the terminal with echo off; a pipe works too (keys stay out of argv)."""
    try:
        text = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    except click.Abort:
        raise click.UsageError(f"No {label} key given and none could be read from the prompt. Use {options_hint}.") from None
    return Key(text, f"{label} key typed at the prompt")


def _check_new_key(key: Key) -> None:
    """Refuse a new key TREK would not read back as given (exit 6); warn about a weak one."""
    refuse_unreadable_new_key(key)
    for warning in new_key_warnings(key):
        _warn(warning)


def _emit_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


db_option = click.option("--db", type=click.Path(path_type=Path), help="TREK's database file (data/travel.db).")
data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path),
    help="TREK's data directory (holds travel.db and .encryption_key). The key TREK uses there is the default old key.",
)
workers_option = click.option(
    "--workers", type=click.IntRange(0, 64), default=None,
    help="Worker processes for the decryption and encryption, besides this one (0: none). Default: one per "
         "core beyond the first, at most 3, for databases larger than 8 MB.",
)
json_option = click.option("--json", "json_output", is_flag=True, help="Write a JSON report to stdout.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Only errors on stderr; no progress bars.")
def key_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--key-file`` and ``--key-env``, both repeatable; ``what`` says which key they hold."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--key-env", multiple=True, metavar="NAME",
                               help=f"Environment variable holding {what}. Repeatable.")(command)
        return click.option("--key-file", type=click.Path(path_type=Path), multiple=True,
                            help=f"File holding {what}. Repeatable.")(command)

    return decorate


wait_option = click.option(
    "--wait", type=click.FloatRange(0, 600), default=10.0, show_default=True,
    help="Seconds to wait for another program's lock on the database before giving up.",
)


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="keyrotate")
def main() -> None:
    """Rotate the ENCRYPTION_KEY of a TREK database, all secrets or none.

    \b
    Typical use (stop TREK first):
      keyrotate generate-key --out new.key
      keyrotate verify --data-dir ./data
      keyrotate rotate --data-dir ./data --new-key-file new.key --dry-run
      keyrotate rotate --data-dir ./data --new-key-file new.key

    Keys are never taken on the command line: they come from a file, an
    environment variable named on the command line, or a hidden prompt.
    Try `keyrotate demo` to watch the whole flow on a throwaway database.
    """


@main.command(epilog=EXIT_CODES_HELP)
@db_option
@data_dir_option
@click.option("--old-key-file", type=click.Path(path_type=Path), multiple=True,
              help="File holding an old key (trimmed, like TREK reads .encryption_key). Repeat for several old keys.")
@click.option("--old-key-env", multiple=True, metavar="NAME",
              help="Environment variable holding an old key (used as is). Repeatable.")
@click.option("--new-key-file", type=click.Path(path_type=Path), help="File holding the new key.")
@click.option("--new-key-env", metavar="NAME", help="Environment variable holding the new key.")
@click.option("--backup", "backup_path", type=click.Path(path_type=Path),
              help="Where to write the backup. Default: next to the database, named with the time.")
@click.option("--no-backup", is_flag=True, help="Do not back up first. Only if you have your own backup.")
@click.option("--discard-old-key", is_flag=True,
              help="Do not save the old key from data/.encryption_key before replacing it. Default: it is saved "
                   "beside the backup as <backup>.key (0600), since backups and backup ZIPs open only with it.")
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
def rotate(
    db: Path | None, data_dir: Path | None, old_key_file: tuple[Path, ...], old_key_env: tuple[str, ...],
    new_key_file: Path | None, new_key_env: str | None, backup_path: Path | None, no_backup: bool,
    discard_old_key: bool, dry_run: bool,
    skip_undecryptable: bool, encrypt_plaintext: bool, yes: bool, allow_running: bool, vacuum: bool,
    generate_new_key: bool, new_key_out: Path | None, rekey_backups: bool, incident: bool,
    rotate_jwt_secret: bool, no_audit_log: bool, revoke_share_links: bool, expire_invites: bool, wait: float, workers: int | None, json_output: bool, quiet: bool,
) -> None:
    """Re-encrypt every secret in the database under a new key. Stop TREK first.

    All or nothing: every value is re-encrypted in one transaction and each new
    value is checked before it is written; if any catalogued secret opens under
    none of the keys, everything is rolled back and nothing changes. Before the
    first write the database is backed up (mode 0600, through SQLite, so nothing
    waiting in travel.db-wal is lost). After the commit the whole database is
    verified again on a fresh connection, and with --data-dir the new key is
    written to data/.encryption_key. Run it again after any interruption: it
    finishes the job.
    """
    quiet = quiet or json_output

    def action() -> int:
        path = _database(db, data_dir)
        if new_key_file and new_key_env:
            raise click.UsageError("Give the new key once: --new-key-file or --new-key-env.")
        if rotate_jwt_secret and data_dir is None:
            raise click.UsageError("--rotate-jwt-secret needs --data-dir (the directory holding .jwt_secret).")
        if backup_path and no_backup:
            raise click.UsageError("--backup and --no-backup contradict each other.")
        old_keys = _keys(old_key_file, old_key_env, "old", _warn)
        interactive = False
        old_keys = old_keys or _trek_keys(data_dir)
        if not old_keys:
            old_keys = [_prompt_key("Old ENCRYPTION_KEY", "old", "--old-key-file FILE or --old-key-env NAME", confirm=False)]
            interactive = True
        generated = ops.new_key_for_rotation(generate_new_key, new_key_out, new_key_file, new_key_env)
        new_keys = _keys([new_key_file] if new_key_file else [], [new_key_env] if new_key_env else [], "new", _warn)
        if generated is not None:
            new_key = generated
        elif new_keys:
            new_key = new_keys[0]
        else:
            new_key = _prompt_key("New ENCRYPTION_KEY", "new", "--new-key-file FILE or --new-key-env NAME", confirm=True)
            interactive = True
        _check_new_key(new_key)
        if environment_holds(old_keys):
            _warn("ENCRYPTION_KEY in this shell holds the old key. Change or unset it wherever TREK runs.")
        backup = None
        if not dry_run and not no_backup:
            backup = backup_path or _free_backup_name(path)
        options = RotateOptions(
            db_path=path, old_keys=tuple(old_keys), new_key=new_key, backup_path=backup, dry_run=dry_run,
            skip_undecryptable=skip_undecryptable, encrypt_plaintext=encrypt_plaintext, busy_timeout=wait,
            key_file=(data_dir / ".encryption_key") if data_dir is not None else None,
            allow_running=allow_running, vacuum=vacuum, workers=workers, save_old_key=not discard_old_key,
            audit_log=not no_audit_log, revoke=Revocation(share_links=revoke_share_links, invites=expire_invites),
        )
        confirm = None
        if interactive and not yes and not dry_run:
            confirm = _confirm_plan
        progress = _progress(json_output, quiet)
        stopped_by = None  # the signal that stopped the run after its commit
        exposure = None
        try:
            exposure = ops.incident_before(path, old_keys, incident, wait)
            report = rotate_database(options, progress=progress.callback(), confirm=confirm, notice=_say)
        except KeyrotateError as error:
            ops.incident_despite_failure(exposure, path, old_keys)
            raise (ops.not_used_note(error, new_key_out) if generated and new_key_out else error) from None
        except interrupts.Interrupted as interrupt:
            if interrupt.report is None:
                raise stopped_before_commit(interrupt, new_key_out if generated else None) from None
            report, stopped_by = interrupt.report, interrupt.signal_name
        finally:
            progress.close()
        # After a commit, finish_rotation prints fuller operator steps than the report's own.
        _say(render_rotation(report, with_next_steps=not report.committed), quiet=quiet)
        if (revoke_share_links or expire_invites) and not report.revoked and not report.committed:
            _warn("Nothing needed re-encrypting, so nothing was committed and no token was revoked: "
                  "delete share links and open invites in TREK's admin panel.")
        extras = ops.RotationExtras()
        new_key_path = new_key_out if generated else new_key_file
        try:
            if stopped_by is None:
                ops.finish_rotation(
                    report, path=path, data_dir=data_dir, old_keys=old_keys, new_key=new_key,
                    new_key_file=new_key_path, rekey=rekey_backups, encrypt_plaintext=encrypt_plaintext,
                    exposure=exposure, quiet=quiet, extras=extras,
                )
        except KeyboardInterrupt as interrupt:  # during --rekey-backups
            stopped_by = signal_name(interrupt)
        if stopped_by is not None and "operator_steps" not in extras.json:  # the steps for TREK still apply
            ops.operator_steps(report, data_dir=data_dir, new_key_file=new_key_path, old_keys=old_keys, quiet=quiet,
                               extras=extras)
        if stopped_by is not None:
            left = [str(z) for z in find_backups(path.parent) if str(z) not in extras.zips_done] if rekey_backups else []
            raise stopped_after_commit(stopped_by, report, zips_left=left,
                                       rerun=rerun_command(new_key_out if generated else None))
        if rotate_jwt_secret and data_dir is not None:
            extras.json["jwt_secret"] = ops.jwt_after_rotation(report, data_dir, audit=not no_audit_log, wait=wait,
                                                               quiet=quiet)
        if json_output:
            _emit_json({**report.to_json(), **extras.json})
        elif extras.stdout:
            click.echo(extras.stdout)
        return int(ExitCode.UNDECRYPTABLE if extras.zips_left else ExitCode.OK)

    _run(action)


def _confirm_plan(plan: RotationPlan) -> bool:
    click.echo("Plan:", err=True)
    for loc in plan.locations:
        if loc.catalogued and loc.presence == "active" and loc.tokens:
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


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _free_backup_name(db: Path) -> Path:
    """``travel.db.keyrotate-backup-<time>``, with a counter if a run in the same second made one."""
    base = db.with_name(f"{db.name}.keyrotate-backup-{_timestamp()}")
    candidate, n = base, 1
    while os.path.lexists(candidate):  # a planted link counts as taken: the backup never goes through it
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


@main.command(epilog=EXIT_CODES_HELP)
@db_option
@data_dir_option
@key_options("a key to test (the first one given is the one that must open everything)")
@wait_option
@workers_option
@json_option
@quiet_option
def verify(
    db: Path | None, data_dir: Path | None, key_file: tuple[Path, ...], key_env: tuple[str, ...], wait: float,
    workers: int | None, json_output: bool, quiet: bool,
) -> None:
    """Read-only: does this key really open every secret?

    Counts, per location, the secrets that open under the first key, under
    another key given, that are plaintext, empty, or open under none. Exits 0
    only when the first key opens every catalogued secret. With --data-dir and
    no key given, tests the key TREK would use from that directory.
    """
    quiet = quiet or json_output

    def action() -> int:
        path = _database(db, data_dir)
        # Not "old key": after a rotation the key TREK uses is the new one.
        keys = _keys(key_file, key_env, "verify", _warn) or _trek_keys(data_dir, "the")
        if not keys:
            keys = [_prompt_key("ENCRYPTION_KEY to verify", "the", "--key-file FILE or --key-env NAME", confirm=False)]
        progress = _progress(json_output, quiet)
        try:
            report = verify_database(path, keys, busy_timeout=wait, progress=progress.callback(), workers=workers)
        finally:
            progress.close()
        if json_output:
            _emit_json(report.to_json())
        _say(render_verify(report), quiet=quiet)
        return int(ExitCode.OK if report.ok else ExitCode.VERIFY_FAILED)

    _run(action)


@main.command("generate-key")
@click.option("--out", type=click.Path(path_type=Path), help="Write the key to this new file (mode 0600) instead of stdout.")
def generate_key(out: Path | None) -> None:
    """Print a new random key (64 hex characters, like `openssl rand -hex 32`)."""

    def action() -> int:
        text = generate_key_text()
        if out is None:
            click.echo(text)
            return int(ExitCode.OK)
        create_key_file(out, text)
        _say(f"Wrote a new key to {out} (mode 0600).")
        return int(ExitCode.OK)

    _run(action)


@main.command()
@click.option("--keep", type=click.Path(path_type=Path), help="Build the demo in this (new) directory and keep it.")
def demo(keep: Path | None) -> None:
    """Watch the whole flow on a throwaway TREK-shaped database.

    Builds a small database in a temporary directory, then runs generate-key,
    verify, rotate --dry-run, rotate and verify on it, explaining each step.
    """
    from keyrotate.operations.demo import run_demo

    _run(lambda: run_demo(keep, lambda line: click.echo(line, err=True)))


# The operations commands register themselves on `main`; imported last because they use the helpers above.
from keyrotate.cli import leak_commands as ops  # noqa: E402
