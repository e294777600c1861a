"""The ``rotate-jwt-secret`` command and ``rotate --rotate-jwt-secret``: the CLI side of operations.jwt_secret."""

from __future__ import annotations

import dataclasses
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from keyrotate.cli.options import exit_codes_help, quiet_option, wait_option
from keyrotate.cli.running import run, say
from keyrotate.errors import ExitCode, InputNotFoundError, InterruptedAfterCommitError, KeyrotateError
from keyrotate.operations.jwt_secret import JwtRotation, rotate_jwt_secret
from keyrotate.rotation.report import RotationReport
from keyrotate.store.files import mode_of
from keyrotate.store.processes import refuse_if_open_elsewhere

JWT_HELP = exit_codes_help({
    0: "replaced", 3: "data directory or .jwt_secret not found", 6: ".jwt_secret unreadable or a symbolic link",
    10: "travel.db in use (stop TREK)", 11: "cannot write (a file in the way, read-only, disk full)",
})


@click.command("rotate-jwt-secret", epilog=JWT_HELP)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="TREK's data directory.")
@click.option("--no-audit-log", is_flag=True, help="Do not record the rotation in TREK's audit_log table.")
@click.option("--allow-running", is_flag=True, help="Replace it even though another process has travel.db open.")
@wait_option
@quiet_option
def rotate_jwt_secret_command(data_dir: Path, no_audit_log: bool, allow_running: bool, wait: float,
                              quiet: bool) -> None:
    """Replace TREK's session-signing secret (data/.jwt_secret): signs every user out. Stop TREK first.

    Writes 32 new random bytes as hex (owner, group and mode kept) and saves the old
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

    run(action)


def jwt_after_rotation(report: RotationReport, data_dir: Path, *, audit: bool, wait: float,
                       quiet: bool) -> dict[str, Any]:
    """``rotate --rotate-jwt-secret``: once .encryption_key holds the new key, replace .jwt_secret."""
    if report.dry_run:
        say(f"Would replace {data_dir / '.jwt_secret'} (signing every user out).", quiet=quiet)
        return {"replaced": False}
    saved = Path(f"{report.backup}.jwt_secret") if report.backup else _saved_jwt_name(data_dir)
    before = _content(data_dir / ".jwt_secret")
    try:
        replaced = rotate_jwt_secret(data_dir, saved, audit=audit, busy_timeout=wait)
    except (OSError, KeyrotateError) as exc:
        if isinstance(exc, KeyrotateError) and _content(data_dir / ".jwt_secret") != before:
            raise _only_the_audit_row_failed(data_dir, exc) from None
        reason = exc.message if isinstance(exc, KeyrotateError) else exc.strerror or str(exc)
        raise InterruptedAfterCommitError(
            f"The rotation is committed and .encryption_key holds the new key, but replacing "
            f"{data_dir / '.jwt_secret'} failed ({reason}): it still holds the old session secret, with which "
            "whoever has a copy can sign in as anyone. Fix that (free space?) and run the same command again, or "
            f"run: keyrotate rotate-jwt-secret --data-dir {shlex.quote(str(data_dir))}") from None
    return _announce_jwt(replaced, quiet)


def _only_the_audit_row_failed(data_dir: Path, exc: KeyrotateError) -> InterruptedAfterCommitError:
    """Everything is done but TREK's audit-log row: exit 13 all the same (never "nothing was changed": the
    secrets are under the new key), and a program that took the database meanwhile may be TREK."""
    busy = exc.exit_code is ExitCode.DATABASE_BUSY
    why = "another program holds travel.db" if busy else "travel.db could not be written"
    return InterruptedAfterCommitError(
        f"The rotation is committed, .encryption_key holds the new key and {data_dir / '.jwt_secret'} a new session "
        f"secret, but recording that in TREK's audit log failed ({why}). Nothing else is left to do"
        + ("; if that program is TREK, started before .jwt_secret changed, restart it: until then it signs "
           "sessions with the old secret." if busy else "."))


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _saved_jwt_name(data_dir: Path) -> Path:
    return data_dir / f".jwt_secret.keyrotate-old-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"


def _announce_jwt(result: JwtRotation, quiet: bool) -> dict[str, Any]:
    if result.encryption_key_written:
        say(f"This install encrypted with its session secret: {result.encryption_key_written} now holds that key, "
            "so TREK keeps reading its secrets once .jwt_secret changes.", quiet=quiet)
    say(f"Replaced {result.jwt_secret} ({mode_of(result.jwt_secret)}, owner kept): every user is signed out at TREK's next start. The old "
        f"secret is saved in {result.saved_old}; delete it once TREK runs."
        + (" Recorded in TREK's audit log." if result.audit_logged else ""), quiet=quiet)
    return dataclasses.asdict(result) | {"replaced": True}
