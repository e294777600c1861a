"""What rotate checks on its inputs before the engine: options that contradict each other, TREK's own key files
given as the new key (refused), and the key in use given as the new key (warned about)."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

import click

from keyrotate.cli.rotate_args import RotateArgs, RotationRun
from keyrotate.cli.running import warn
from keyrotate.errors import InputNotFoundError, KeyrotateError
from keyrotate.rotation.old_key import newest_backup, saved_old_keys
from keyrotate.trek.keys import resolve_trek_key


def refuse_contradictions(args: RotateArgs, path: Path) -> None:
    """Usage errors (exit 2) before any key is read: options that contradict each other or TREK's own files."""
    if args.new_key_file and args.new_key_env:
        raise click.UsageError("Give the new key once: --new-key-file or --new-key-env.")
    if args.rotate_jwt_secret and args.data_dir is None:
        raise click.UsageError("--rotate-jwt-secret needs --data-dir (the directory holding .jwt_secret).")
    jwt = args.data_dir / ".jwt_secret" if args.rotate_jwt_secret and args.data_dir is not None else None
    if jwt is not None and not jwt.is_file():
        what = "is not a file" if os.path.lexists(jwt) else "does not exist"
        raise InputNotFoundError(f"--rotate-jwt-secret: {jwt} {what}, so there is no session secret to replace "
                                 "(TREK makes one at its first start). Drop the option, or see what is there first.")
    if args.backup_path and args.no_backup:
        raise click.UsageError("--backup and --no-backup contradict each other.")
    if args.discard_old_key and args.rotate_jwt_secret and args.data_dir is not None and not args.dry_run:
        with suppress(KeyrotateError):  # no key there: the run itself says so
            if resolve_trek_key(args.data_dir).origin == "jwt_secret_fallback":
                raise click.UsageError(
                    "On this install TREK's key is the content of .jwt_secret, which --rotate-jwt-secret keeps beside "
                    "the backup anyway: --discard-old-key cannot discard it, and without the old key saved the printed "
                    "restore would leave TREK on the new .jwt_secret, unable to read its secrets. Drop --discard-old-key.")
    if args.discard_old_key and args.rekey_backups and not args.dry_run:
        raise click.UsageError(
            "--discard-old-key with --rekey-backups: the backup ZIPs are re-encrypted after .encryption_key holds the "
            "new key, and a run stopped in between would leave them under a key kept nowhere. Drop --discard-old-key "
            "and delete the saved <backup>.key once `keyrotate backups` shows every ZIP under the new key.")
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
    if args.new_key_file is not None and _same_file(args.new_key_file, trek_files[".encryption_key"]):
        raise click.UsageError(
            f"--new-key-file {args.new_key_file} is TREK's key file: it holds the key in use, not a new one (a run "
            "with it would find nothing to do). Give the new key's own file, or --generate-new-key --new-key-out FILE.")


def _same_file(given: Path, trek_file: Path) -> bool:
    try:
        return os.path.samefile(given, trek_file)
    except OSError:  # one of them is not there (yet): compare where they would be, links in the way followed
        return os.path.realpath(given) == os.path.realpath(trek_file)


def warn_if_the_new_key_is_in_use(rotation: RotationRun) -> None:
    """The new key given is the key TREK uses, and nothing beside the database shows a rotation to it (no backup,
    no saved old key): most likely a copy of .encryption_key given as the new key, which ends in "nothing to do"
    with the leaked key still in use. A rerun of a finished rotation leaves those traces (unless it ran with
    --no-backup --discard-old-key), so this is a warning, not a refusal."""
    new = rotation.keys.new
    if rotation.keys.reused or not any(key.same_secret_as(new) for key in rotation.keys.old):
        return
    if saved_old_keys(rotation.path) or newest_backup(rotation.path) is not None:
        return
    warn("The new key given is the key TREK already uses, and nothing beside the database shows a rotation to it (no "
         "backup, no saved old key). If you meant to rotate, this is the current key (a copy of .encryption_key?): "
         "nothing will be rotated and it stays in use. Give a new key: --generate-new-key --new-key-out FILE.")
