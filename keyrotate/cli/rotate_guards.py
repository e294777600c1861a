"""What rotate checks on its inputs: options that contradict each other, TREK's own key files given as the new
key, and the hint for a wrong old key on an install that encrypts with its session secret."""

from __future__ import annotations

import os
import shlex
from contextlib import suppress
from pathlib import Path

import click

from keyrotate.cli.rotate_args import RotateArgs, RotationRun
from keyrotate.errors import InputNotFoundError, KeyrotateError, WrongKeyError
from keyrotate.trek.keys import resolve_trek_key


def refuse_contradictions(args: RotateArgs, path: Path) -> None:
    """Usage errors (exit 2) before any key is read: options that contradict each other or TREK's own files."""
    if args.new_key_file and args.new_key_env:
        raise click.UsageError("Give the new key once: --new-key-file or --new-key-env.")
    if args.rotate_jwt_secret and args.data_dir is None:
        raise click.UsageError("--rotate-jwt-secret needs --data-dir (the directory holding .jwt_secret).")
    if args.rotate_jwt_secret and args.data_dir is not None and not (args.data_dir / ".jwt_secret").is_file():
        raise InputNotFoundError(f"--rotate-jwt-secret: {args.data_dir / '.jwt_secret'} does not exist, so there is "
                                 "no session secret to replace (TREK makes one at its first start). Drop the option.")
    if args.backup_path and args.no_backup:
        raise click.UsageError("--backup and --no-backup contradict each other.")
    if args.discard_old_key and args.rotate_jwt_secret and args.data_dir is not None and not args.dry_run:
        with suppress(KeyrotateError):  # no key there: the run itself says so
            if resolve_trek_key(args.data_dir).origin == "jwt_secret_fallback":
                raise click.UsageError(
                    "On this install TREK's key is the content of .jwt_secret, which --rotate-jwt-secret keeps beside "
                    "the backup anyway: --discard-old-key cannot discard it, and without the old key saved the printed "
                    "restore would leave TREK on the new .jwt_secret, unable to read its secrets. Drop --discard-old-key.")
    _refuse_trek_key_files(args, path)


def _refuse_trek_key_files(args: RotateArgs, path: Path) -> None:
    """TREK's key files are not where a new key comes from or goes before the rotation: --new-key-out naming
    .encryption_key holds the key in use (an "earlier run" to finish, exit 0, nothing rotated) or, where it did not
    exist, gives TREK a key nothing is under yet; .jwt_secret as the new key makes the session secret the key."""
    trek_files = {name: path.parent / name for name in (".encryption_key", ".jwt_secret")}
    if args.new_key_out is not None and any(_same_file(args.new_key_out, f) for f in trek_files.values()):
        raise click.UsageError(
            f"--new-key-out {args.new_key_out} is TREK's own key file: give a file of its own (keyrotate writes the "
            "new key into .encryption_key itself, once every secret is under it).")
    if args.new_key_file is not None and _same_file(args.new_key_file, trek_files[".jwt_secret"]):
        raise click.UsageError(
            f"--new-key-file {args.new_key_file} is TREK's session secret (.jwt_secret), not a new encryption key: "
            "use --generate-new-key --new-key-out FILE, or a key file of its own.")


def _same_file(given: Path, trek_file: Path) -> bool:
    try:
        return os.path.samefile(given, trek_file)
    except OSError:  # one of them is not there (yet): compare where they would be
        return os.path.abspath(given) == os.path.abspath(trek_file)


def session_secret_hint(error: KeyrotateError, rotation: RotationRun) -> KeyrotateError:
    """A wrong old key on an install that has been encrypting with its session secret (TREK's fallback for
    installs older than April 2026, TREK-FORMAT.md section 2): say so when .jwt_secret beside it opens them."""
    jwt = rotation.path.parent / ".jwt_secret"
    if not isinstance(error, WrongKeyError) or not jwt.is_file():
        return error
    from keyrotate.rotation.verify import verify_database  # this failure only
    from keyrotate.trek.keys import key_from_file

    try:
        key, _ = key_from_file(jwt, "session secret")
        if any(key.same_secret_as(old) for old in rotation.keys.old):
            return error
        opened = verify_database(rotation.path, [key], busy_timeout=rotation.args.wait, workers=0).opened_by_first
    except (KeyrotateError, OSError):
        return error
    if not opened:
        return error
    return WrongKeyError(f"{error.message}\n{jwt} opens {opened} of them: this install has been encrypting with its "
                         "session secret (TREK's fallback for installs made before April 2026). Give it as the old key: "
                         f"--old-key-file {shlex.quote(str(jwt))}")
