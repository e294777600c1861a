"""The options several commands share, and the exit-code epilogs of their ``--help``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from keyrotate.cli.render import FORMATS

EXIT_CODES_HELP = """\b
Exit codes:
  0  success                       7  old key opens none of the secrets
  1  internal error (a bug)        8  some secrets open under no key (nothing written), or a ZIP left as it is
  2  usage error                   9  verification failed
  3  file or directory not found  10  database in use (stop TREK)
  4  not SQLite, or damaged       11  cannot write (read-only, disk full, backup)
  5  SQLite, but not TREK's       12  cancelled or interrupted; nothing written
  6  unusable key (empty, same as the other, unreadable key file)
 13  stopped after the commit: rotated; run the same command again to finish
141  stdout closed early (a pipe into head): no message
"""


def exit_codes_help(meanings: dict[int, str]) -> str:
    """A command's own exit-code epilog: only the codes it can return, in its own words."""
    common = {1: "internal error (a bug)", 2: "usage error", 12: "cancelled or interrupted; nothing written",
              141: "stdout closed early (a pipe into head): no message"}
    rows = sorted({**common, **meanings}.items())
    return "\b\nExit codes:\n" + "".join(f"  {code:>3}  {meaning}\n" for code, meaning in rows)


OPENS_DATABASE = {
    3: "database or data directory not found", 4: "not SQLite, or damaged", 5: "SQLite, but not TREK's",
    10: "database in use (another program holds its lock longer than --wait)",
}

# Not checked by click (its Path type refuses an unreadable file as a usage error, exit 2): keyrotate reads the
# file itself and says what is wrong with it (exit 6).
KEY_FILE = click.Path(path_type=Path, readable=False)
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
wait_option = click.option(
    "--wait", type=click.FloatRange(0, 600), default=10.0, show_default=True,
    help="Seconds to wait for another program's lock on the database before giving up.",
)
format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
                             help="Report format on stdout: text for a terminal, json, markdown or csv for a ticket.")


def key_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--key-file`` and ``--key-env``, both repeatable; ``what`` says which key they hold."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        # Unlike rotate's --old-key-*, these name the keys under test: the key TREK uses is not added to them.
        command = click.option("--key-env", multiple=True, metavar="NAME",
                               help=f"Environment variable holding {what}. Repeatable.")(command)
        return click.option("--key-file", type=KEY_FILE, multiple=True,
                            help=f"File holding {what}. Repeatable. Given, it is tested instead of the key TREK "
                                 "uses from --data-dir.")(command)

    return decorate
