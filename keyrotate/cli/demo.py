"""The ``demo`` command: the whole flow on a throwaway TREK-shaped database, narrated on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from keyrotate.cli.running import run
from keyrotate.cli.summaries import render_rotation, render_verify
from keyrotate.errors import ExitCode

if TYPE_CHECKING:
    from keyrotate.operations.demo import Demo


@click.command()
@click.option("--keep", type=click.Path(path_type=Path), help="Build the demo in this (new) directory and keep it.")
def demo(keep: Path | None) -> None:
    """Watch the whole flow on a throwaway TREK-shaped database.

    Builds a small database in a temporary directory, then runs generate-key,
    verify, rotate --dry-run, rotate and verify on it, explaining each step.
    """
    run(lambda: _run_demo(keep))


def _run_demo(keep: Path | None) -> int:
    from keyrotate.operations.demo import Demo, demo_directory

    with demo_directory(keep) as workdir:
        return _narrate(Demo(workdir))


def _say(line: str) -> None:
    click.echo(line, err=True)


def _narrate(demo: Demo) -> int:
    data, new_key_path = demo.data, demo.new_key_path
    # Counted once, by the same scan every step below reports on, so the numbers agree.
    before = demo.verify_before()
    catalogued = before.catalogued_tokens
    elsewhere = sum(sum(loc.opened_by) for loc in before.locations if not loc.catalogued)
    _say(f"A TREK-shaped database with {catalogued + elsewhere} encrypted secrets is in {data}/travel.db"
         + (f" ({catalogued} where TREK keeps them, {elsewhere} found elsewhere by keyrotate's search)," if elsewhere
            else ","))
    _say("under the key in data/.encryption_key, just as TREK leaves it. (TREK must be stopped for a rotation.)\n")

    _say("Step 1. Make a new key, straight into a file only you can read:")
    _say(f"  $ keyrotate generate-key --out {new_key_path}")
    new_key = demo.make_new_key()
    _say("  wrote it (mode 0600). Keys never go on the command line, so they stay out of shell history.\n")

    _say("Step 2. Check that the current key really opens everything (read-only):")
    _say(f"  $ keyrotate verify --data-dir {data}")
    _say(_indent(render_verify(before)) + "\n")

    _say("Step 3. Rehearse: a dry run does all the work inside a transaction, then rolls it back:")
    _say(f"  $ keyrotate rotate --data-dir {data} --new-key-file {new_key_path} --dry-run")
    _say(_indent(render_rotation(demo.rehearse(new_key))) + "\n")

    _say("Step 4. Rotate for real: back up, re-encrypt in one transaction, verify, commit, verify again,")
    _say("then write the new key to data/.encryption_key:")
    _say(f"  $ keyrotate rotate --data-dir {data} --new-key-file {new_key_path}")
    _say(_indent(render_rotation(demo.rotate(new_key))) + "\n")

    _say("Step 5. Confirm, read-only, that the key TREK will now read opens everything:")
    _say(f"  $ keyrotate verify --data-dir {data}")
    after = demo.verify_after()
    _say(_indent(render_verify(after)) + "\n")
    _say("Done. On a real install, also change or remove ENCRYPTION_KEY in TREK's environment before restarting it.")
    return int(ExitCode.OK if after.ok else ExitCode.VERIFY_FAILED)


def _indent(text: str) -> str:
    return "\n".join("  | " + line if line else "  |" for line in text.splitlines())
