"""The ``verify`` command: does this key really open every secret? Read-only."""

from __future__ import annotations

from pathlib import Path

import click

from keyrotate.cli.inputs import database, given_keys, prompt_key, trek_keys
from keyrotate.cli.options import (
    EXIT_CODES_HELP,
    data_dir_option,
    db_option,
    json_option,
    key_options,
    quiet_option,
    wait_option,
    workers_option,
)
from keyrotate.cli.progress import progress_bars
from keyrotate.cli.render import emit, render
from keyrotate.cli.running import run, say, warn
from keyrotate.cli.wrong_key import untrimmed_key_hint
from keyrotate.errors import ExitCode
from keyrotate.rotation.verify import verify_database


@click.command(epilog=EXIT_CODES_HELP)
@db_option
@data_dir_option
@key_options("a key to test (the first one given is the one that must open everything)")
@wait_option
@workers_option
@json_option
@quiet_option
def verify(
    db: Path | None, data_dir: Path | None, key_file: tuple[Path, ...], key_env: tuple[str, ...], wait: float,
    workers: int | None, json_output: bool, quiet: bool,
) -> None:
    """Read-only: does this key really open every secret?

    Counts, per location, the secrets that open under the first key, under
    another key given, that are plaintext, empty, or open under none. Exits 0
    only when the first key opens every catalogued secret. With --data-dir and
    no key given, tests the key TREK would use from that directory.
    """
    quiet = quiet or json_output

    def action() -> int:
        path = database(db, data_dir)
        # Not "old key": after a rotation the key TREK uses is the new one.
        keys = given_keys(key_file, key_env, "verify") or trek_keys(data_dir, "the")
        if not keys:
            keys = [prompt_key("ENCRYPTION_KEY to verify", "", "--key-file FILE or --key-env NAME", confirm=False)]
        progress = progress_bars(json_output, quiet)
        try:
            report = verify_database(path, keys, busy_timeout=wait, progress=progress.callback(), workers=workers)
        finally:
            progress.close()
        if json_output:
            emit(report, "json")
        say(render(report, "text"), quiet=quiet)
        if not report.ok:  # a key file's exact text may be the key TREK runs with
            hint = untrimmed_key_hint(keys[0], path, wait)
            if hint is not None:
                warn(hint)
        return int(ExitCode.OK if report.ok else ExitCode.VERIFY_FAILED)

    run(action)
