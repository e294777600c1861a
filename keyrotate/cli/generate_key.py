"""The ``generate-key`` command: a new random key, on stdout or in a new file."""

from __future__ import annotations

from pathlib import Path

import click

from keyrotate.cli.running import run, say
from keyrotate.errors import ExitCode
from keyrotate.trek.keys import create_key_file, generate_key_text


@click.command("generate-key")
@click.option("--out", type=click.Path(path_type=Path), help="Write the key to this new file (mode 0600) instead of stdout.")
def generate_key(out: Path | None) -> None:
    """Print a new random key (64 hex characters, like `openssl rand -hex 32`)."""

    def action() -> int:
        text = generate_key_text()
        if out is None:
            click.echo(text)
            return int(ExitCode.OK)
        create_key_file(out, text)
        say(f"Wrote a new key to {out} (mode 0600).")
        return int(ExitCode.OK)

    run(action)
