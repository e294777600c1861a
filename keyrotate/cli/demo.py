"""The ``demo`` command: the whole flow on a throwaway TREK-shaped database."""

from __future__ import annotations

from pathlib import Path

import click

from keyrotate.cli.running import run


@click.command()
@click.option("--keep", type=click.Path(path_type=Path), help="Build the demo in this (new) directory and keep it.")
def demo(keep: Path | None) -> None:
    """Watch the whole flow on a throwaway TREK-shaped database.

    Builds a small database in a temporary directory, then runs generate-key,
    verify, rotate --dry-run, rotate and verify on it, explaining each step.
    """
    from keyrotate.operations.demo import run_demo

    run(lambda: run_demo(keep, lambda line: click.echo(line, err=True)))
