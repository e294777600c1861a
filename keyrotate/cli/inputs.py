"""Where a command's database and keys come from: --db/--data-dir, key files, environment variables, the prompt."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import click

from keyrotate.cli.running import warn
from keyrotate.errors import CancelledError, KeyProblemError, KeyrotateError
from keyrotate.rotation.old_key import fallback_explanation, saved_old_keys
from keyrotate.store.database import locate_database
from keyrotate.trek.keys import (
    Key,
    key_from_env,
    key_from_file,
    new_key_warnings,
    refuse_unreadable_new_key,
    resolve_trek_key,
)


def database(db: Path | None, data_dir: Path | None) -> Path:
    """The database file named by exactly one of --db and --data-dir."""
    if (db is None) == (data_dir is None):
        raise click.UsageError("Give exactly one of --db PATH or --data-dir DIR.")
    return locate_database(db, data_dir)


def given_keys(files: Sequence[Path], envs: Sequence[str], label: str) -> list[Key]:
    """The keys named by key-file and key-env options, in that order."""
    found = []
    for path in files:
        key, warnings = key_from_file(path, label)
        for warning in warnings:
            warn(warning)
        found.append(key)
    found.extend(key_from_env(name, label) for name in envs)
    return found


def trek_keys(data_dir: Path | None, purpose: str | None = None, *, jwt_secret_replaced: bool = False) -> list[Key]:
    """The key TREK would use from ``data_dir`` (none without one), with what the operator should know about it.

    ``purpose`` relabels the key in reports ("suspected key TREK uses from DIR"); ``jwt_secret_replaced``:
    the run replaces .jwt_secret too.
    """
    if data_dir is None:
        return []
    resolution = resolve_trek_key(data_dir)
    explanation = fallback_explanation(resolution, jwt_secret_replaced=jwt_secret_replaced)
    if explanation:
        warn(explanation)
    for warning in resolution.warnings:
        warn(warning)
    if purpose is None:
        return [resolution.key]
    return [dataclasses.replace(resolution.key, source=f"{purpose} key TREK uses from {data_dir}")]


def trek_key_besides(data_dir: Path | None, given: Sequence[Key], purpose: str | None = None, *,
                     jwt_secret_replaced: bool = False) -> list[Key]:
    """:func:`trek_keys`, for a command given old keys too: then a data directory with no key TREK could read is no
    error (the keys given may be all there is), just no key."""
    try:
        return trek_keys(data_dir, purpose, jwt_secret_replaced=jwt_secret_replaced)
    except KeyrotateError:
        if not given:
            raise
        return []


def old_keys_beside_trek(trek_key: Sequence[Key], given: Sequence[Key], new_key: Key | None) -> list[Key]:
    """The old keys of a command given --data-dir and --old-key-file/--old-key-env: the key TREK uses first, then
    the keys given (each once). The given keys add to TREK's key rather than replace it, so a database left under
    two keys takes the second one as "give it too" says. TREK's key is left out when it is the new key (a rerun
    after the commit wrote the new key to .encryption_key): the new key is never an old one. Without keys given,
    TREK's key as it is (the engine knows a key file that already holds the new key)."""
    if not given:
        return list(trek_key)
    kept = [key for key in trek_key if new_key is None or not key.same_secret_as(new_key)]
    return [*kept, *(key for key in given if not any(key.same_secret_as(k) for k in kept))]


def prompt_key(prompt: str, label: str, options_hint: str, *, confirm: bool) -> Key:
    """Ask on the terminal with echo off; a pipe works too (keys stay out of argv).

    Ctrl-C, or Ctrl-D on a terminal, cancels (exit 12) as at the confirmation question; a pipe that ends
    before giving a key is a usage error (exit 2) that names the options.
    """
    try:
        text = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True) \
            if _stdin_is_a_terminal() else _read_piped(prompt, confirm)
    except click.Abort as abort:
        # click turns both KeyboardInterrupt and EOFError into Abort; the one it caught is the context.
        if isinstance(abort.__context__, KeyboardInterrupt) or _stdin_is_a_terminal():
            raise CancelledError("Cancelled; nothing was written.") from None
        raise click.UsageError(f"No {_key_called(label)} given and none could be read from the prompt. Use "
                               f"{options_hint}.") from None
    return Key(text, f"{_key_called(label)} typed at the prompt")


def _key_called(label: str) -> str:
    """"old key", "new key"...; "key" for the one key of verify (label "")."""
    return f"{label} key" if label else "key"


def _read_piped(prompt: str, confirm: bool) -> str:
    """The key from standard input when it is no terminal (a pipe, a file), line by line as click asks (a
    confirmation that differs is asked for again). getpass would read the terminal instead, if there is one
    (``echo KEY | keyrotate verify`` then waited for typing), or warn that it cannot turn off an echo."""
    while True:
        text = _piped_line(prompt)
        if not confirm or _piped_line("Repeat for confirmation") == text:
            return text
        click.echo("Error: The two entered values do not match.", err=True)


def _piped_line(prompt: str) -> str:
    click.echo(f"{prompt}: ", err=True)
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise click.Abort
    return line.rstrip("\r\n")


def _stdin_is_a_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def check_new_key(key: Key, db_path: Path | None = None) -> None:
    """Refuse a new key TREK would not read back as given (exit 6); warn about a weak one, and about one this
    database was rotated away from (``db_path``: keyrotate saved it beside the database then)."""
    refuse_unreadable_new_key(key)
    if db_path is not None and _is_session_secret(key, db_path.parent / ".jwt_secret"):
        raise KeyProblemError(f"The new key is the content of {db_path.parent / '.jwt_secret'}, TREK's session "
                              "secret (a copy of it?), not a key of its own: make one with --generate-new-key "
                              "--new-key-out FILE (or keyrotate generate-key --out FILE). Nothing was changed.")
    for warning in new_key_warnings(key):
        warn(warning)
    retired = next((old for old in saved_old_keys(db_path) if old.same_secret_as(key)), None) if db_path else None
    if retired is not None:
        warn(f"The new key is a key this database was rotated away from (the {retired.source}). If that "
             "rotation followed a leak, this brings the leaked key back; make a fresh one with: "
             "keyrotate generate-key --out FILE")


def _is_session_secret(key: Key, jwt: Path) -> bool:
    try:
        session, _ = key_from_file(jwt, "session secret")
    except (KeyrotateError, OSError):  # none there, or unreadable: nothing to compare with
        return False
    return session.same_secret_as(key)


def kept_old_keys(data_dir: Path | None, given: list[Key], new_key: Key, backup: Path | None, *,
                  only_the_backups: bool = False) -> list[Key]:
    """The old keys a rerun can still find, never the new key: the one saved beside ``backup`` (``--backup PATH``
    saves it as ``PATH.key``, which may be away from the database), then :func:`default_old_keys` (older
    rotations' saved keys too: backup ZIPs may be under any of them). ``only_the_backups``: when the backup's own
    key is there, that one alone (the key this run's backup opens with, as a checklist names it)."""
    found: list[Key] = []
    saved = Path(f"{backup}.key") if backup is not None else None
    if saved is not None and saved.is_file() and not saved.is_symlink():
        with suppress(KeyrotateError, OSError):
            found.append(key_from_file(saved, f"old key saved in {saved}")[0])
    if not (found and only_the_backups):
        with suppress(KeyrotateError):  # none there: the keys given, less the new one
            found += default_old_keys(data_dir, given, new_key)
    kept: list[Key] = []
    for key in [*found, *given]:
        if not key.same_secret_as(new_key) and not any(key.same_secret_as(k) for k in kept):
            kept.append(key)
    return kept


def default_old_keys(data_dir: Path | None, trek_key: list[Key], new_key: Key | None) -> list[Key]:
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
