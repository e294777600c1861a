"""The ``keyrotate`` command group: every command registered on it, and the help a newcomer reads first."""

from __future__ import annotations

import click

from keyrotate import __version__
from keyrotate.cli.backups import backups, rekey_backup
from keyrotate.cli.demo import demo
from keyrotate.cli.generate_key import generate_key
from keyrotate.cli.jwt_secret import rotate_jwt_secret_command
from keyrotate.cli.leak import audit, exposure
from keyrotate.cli.options import EXIT_CODES_HELP
from keyrotate.cli.rotate import rotate
from keyrotate.cli.verify import verify


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


for _command in (rotate, verify, generate_key, demo, rotate_jwt_secret_command, backups, rekey_backup, exposure, audit):
    main.add_command(_command)
