"""The ``backups`` and ``rekey-backup`` commands: keys and messages around operations.backup_zips and backup_rekey."""

from __future__ import annotations

from pathlib import Path

import click

from keyrotate.cli.inputs import (
    check_new_key,
    default_old_keys,
    given_keys,
    old_keys_beside_trek,
    prompt_key,
    trek_key_besides,
    trek_keys,
)
from keyrotate.cli.interrupted import signal_name, stopped_before_commit
from keyrotate.cli.options import KEY_FILE, exit_codes_help, format_option, key_options
from keyrotate.cli.render import emit
from keyrotate.cli.running import run, say
from keyrotate.errors import ExitCode, InputNotFoundError, InterruptedAfterCommitError, KeyrotateError
from keyrotate.operations.backup_rekey import RekeyOutcome, RekeyReport, RekeyResult, rekey_backups
from keyrotate.operations.backup_zips import BackupListing, list_backups
from keyrotate.trek.keys import Key

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


@click.command(epilog=BACKUPS_HELP)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="TREK's data directory.")
@key_options("a key to try")
@format_option
def backups(data_dir: Path, key_file: tuple[Path, ...], key_env: tuple[str, ...], fmt: str) -> None:
    """List TREK's backup ZIPs and which keys open the secrets in each (all / some / none).

    Without --key-file/--key-env, tries the key TREK uses from DATA_DIR.
    Read-only: each travel.db is extracted to a private directory beside its
    ZIP and deleted again (as are copies a stopped run left there).
    """

    def action() -> int:
        if not data_dir.is_dir():
            raise InputNotFoundError(f"Data directory {data_dir} does not exist.")
        keys = given_keys(key_file, key_env, "tried") or trek_keys(data_dir, "current")
        emit(BackupListing(str(data_dir / "backups"), list_backups(data_dir, keys, notice=say)), fmt)
        return int(ExitCode.OK)

    run(action)


@click.command("rekey-backup", epilog=REKEY_BACKUP_HELP)
@click.argument("zips", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="TREK's data directory. Old keys: those rotate saved next to travel.db, and the key TREK uses "
                   "there, then any given with --old-key-*; default new key: the key TREK uses there.")
@click.option("--old-key-file", type=KEY_FILE, multiple=True,
              help="File holding an old key. Repeatable. With --data-dir, tried after the old keys found there.")
@click.option("--old-key-env", multiple=True, metavar="NAME",
              help="Environment variable holding an old key. Repeatable. With --data-dir, tried after the old keys "
                   "found there.")
@click.option("--new-key-file", type=KEY_FILE, help="File holding the new key.")
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
    the stored texts checked after the commit), done on a copy in a private
    directory beside the ZIP. The new ZIP replaces the old one atomically (same mode)
    with every other member byte-identical. A ZIP that cannot be fully opened is
    left as it is and named; the exit code is then 8.
    """

    def action() -> int:
        for path in zips:
            if not path.is_file():
                raise InputNotFoundError(f"Backup {path} does not exist or is not a file.")
        if new_key_file and new_key_env:
            raise click.UsageError("Give the new key once: --new-key-file or --new-key-env.")
        new_keys = given_keys([new_key_file] if new_key_file else [], [new_key_env] if new_key_env else [], "new")
        old_keys, new_key = _rekey_keys(data_dir, given_keys(old_key_file, old_key_env, "old"), new_keys)
        report = _rekey(zips, old_keys, new_key, encrypt_plaintext=encrypt_plaintext, dry_run=dry_run)
        emit(report, fmt)
        return int(ExitCode.UNDECRYPTABLE if report.left_alone else ExitCode.OK)

    run(action)


def _rekey_keys(data_dir: Path | None, given_old: list[Key], new_keys: list[Key]) -> tuple[list[Key], Key]:
    """The old keys and the new one: as given, else from --data-dir, else typed at the prompt. With --data-dir,
    old keys given add to the ones found there (as rotate's do)."""
    # What TREK uses now (the new key after a rotation): the default new key, and an old key until then.
    trek_key = trek_key_besides(data_dir, given_old if new_keys else [], "current")
    new = new_keys[0] if new_keys else (trek_key[0] if trek_key else None)
    # With --data-dir and no old key left (none saved, TREK's key the new one): ZIPs under the new key are done,
    # each other one is left as it is, saying which key to give.
    no_old_key_left = data_dir is not None and new is not None
    try:
        found = default_old_keys(data_dir, trek_key, new)
    except KeyrotateError:
        if not given_old and not no_old_key_left:
            raise
        found = []
    old_keys = old_keys_beside_trek(found, given_old, new)
    if not old_keys and not no_old_key_left:
        old_keys = [prompt_key("Old ENCRYPTION_KEY", "old", "--old-key-file FILE or --old-key-env NAME", confirm=False)]
    new_key = (new_keys or trek_key or [prompt_key("New ENCRYPTION_KEY", "new",
                                                   "--new-key-file FILE or --new-key-env NAME", confirm=True)])[0]
    check_new_key(new_key)
    return old_keys, new_key


def _rekey(zips: tuple[Path, ...], old_keys: list[Key], new_key: Key, *, encrypt_plaintext: bool,
           dry_run: bool) -> RekeyReport:
    """Every ZIP rekeyed in turn; an interrupt says which ZIPs are already done (each one whole)."""
    rewritten: list[str] = []

    def each(index: int, total: int, result: RekeyResult | None, zip_path: Path) -> None:
        if result is None:
            say(f"Backup ZIP {index} of {total}: {zip_path} ...")
        elif result.outcome is RekeyOutcome.REKEYED:
            rewritten.append(str(zip_path))

    try:
        return RekeyReport(rekey_backups(zips, old_keys, new_key, encrypt_plaintext=encrypt_plaintext,
                                         dry_run=dry_run, on_each=each, notice=say))
    except KeyboardInterrupt as interrupt:
        if not rewritten:
            raise stopped_before_commit(interrupt) from None
        raise InterruptedAfterCommitError(
            f"Interrupted ({signal_name(interrupt)}) after {len(rewritten)} ZIP(s) were re-encrypted: "
            f"{', '.join(rewritten)}. Every ZIP is whole, under one key. Run the same command again to "
            "finish: the ZIPs already under the new key are left as they are.") from None
