"""``python -m keyrotate`` and the ``keyrotate`` command.

Signals are set up before the CLI (click, cryptography, sqlite3) is even
imported, so an interrupt in the first milliseconds ends with a message and
exit code 12, not a traceback.
"""

from __future__ import annotations

import sys

from keyrotate import interrupts


def run() -> None:
    interrupts.install()
    try:
        import click

        from keyrotate.cli.app import main

        try:
            code = main.main(standalone_mode=False)
        except click.ClickException as error:
            error.show()
            code = error.exit_code
        except click.exceptions.Abort:  # an interrupt while click reads the command line
            raise KeyboardInterrupt from None
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted before anything was done; nothing was written.\n")
        code = 12
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
