"""The ``keyrotate`` command group: every command registered on it, and the help a newcomer reads first."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import click

from keyrotate import __version__
from keyrotate.cli.options import EXIT_CODES_HELP

if TYPE_CHECKING:  # the dependencies import-linter checks (no cycle through here); at run time see COMMANDS
    from keyrotate.cli import backups, demo, generate_key, jwt_secret, leak, rotate, verify  # noqa: F401

# Where each command lives. A command's module (and all it imports) is loaded when that command runs, or
# when --help or a mistyped name needs them all: a `verify` does not import rotate, backups, exposure or
# demo (18 modules; ~15 ms of CPU at every start, measured on the 2-core VM).
COMMANDS = {
    "rotate": ("keyrotate.cli.rotate", "rotate"),
    "verify": ("keyrotate.cli.verify", "verify"),
    "generate-key": ("keyrotate.cli.generate_key", "generate_key"),
    "demo": ("keyrotate.cli.demo", "demo"),
    "rotate-jwt-secret": ("keyrotate.cli.jwt_secret", "rotate_jwt_secret_command"),
    "backups": ("keyrotate.cli.backups", "backups"),
    "rekey-backup": ("keyrotate.cli.backups", "rekey_backup"),
    "exposure": ("keyrotate.cli.leak", "exposure"),
    "audit": ("keyrotate.cli.leak", "audit"),
}


class CommandGroup(click.Group):
    """A click group whose commands are imported on first use, from :data:`COMMANDS`."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            self._load(cmd_name)
        else:  # click suggests the names closest to a mistyped one: it needs them all
            self.load_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_all()
        return super().list_commands(ctx)

    def load_all(self) -> None:
        for name in COMMANDS:
            self._load(name)

    def _load(self, name: str) -> None:
        if name not in self.commands:
            module, attribute = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attribute), name)


@click.group(cls=CommandGroup, epilog=EXIT_CODES_HELP)
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

