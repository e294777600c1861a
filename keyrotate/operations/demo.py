"""``keyrotate demo``: the whole flow on a throwaway database, narrated."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

from keyrotate.errors import ExitCode
from keyrotate.rotation.engine import RotateOptions, rotate_database, verify_database
from keyrotate.rotation.report import render_rotation, render_verify
from keyrotate.trek.keys import create_key_file, generate_key_text, key_from_file, resolve_trek_key
from keyrotate.trek.sample import add_plugin_users, build_sample_database


def run_demo(keep: Path | None, say: Callable[[str], None]) -> int:
    if keep is not None:
        keep.mkdir(mode=0o700, parents=True, exist_ok=False)
        return _demo_in(keep, say)
    with tempfile.TemporaryDirectory(prefix="keyrotate-demo-") as workdir:
        return _demo_in(Path(workdir), say)


def _demo_in(workdir: Path, say: Callable[[str], None]) -> int:
    data = workdir / "data"
    data.mkdir(mode=0o700)
    create_key_file(data / ".encryption_key", generate_key_text())
    old = dataclasses.replace(resolve_trek_key(data).key, source=f"the key TREK uses from {data}")
    build_sample_database(data / "travel.db", old, users=12, seed=7)
    add_plugin_users(data / "travel.db", old, range(1, 5), seed=7)
    # Counted once, by the same scan every step below reports on, so the numbers agree.
    before = verify_database(data / "travel.db", [old])
    catalogued = before.catalogued_tokens
    elsewhere = sum(sum(loc.opened_by) for loc in before.locations if not loc.catalogued)
    say(f"A TREK-shaped database with {catalogued + elsewhere} encrypted secrets is in {data}/travel.db"
        + (f" ({catalogued} where TREK keeps them, {elsewhere} found elsewhere by keyrotate's search)," if elsewhere
           else ","))
    say("under the key in data/.encryption_key, just as TREK leaves it. (TREK must be stopped for a rotation.)\n")

    new_key_path = workdir / "new.key"
    say("Step 1. Make a new key, straight into a file only you can read:")
    say(f"  $ keyrotate generate-key --out {new_key_path}")
    create_key_file(new_key_path, generate_key_text())
    new_key, _ = key_from_file(new_key_path, "new")
    say("  wrote it (mode 0600). Keys never go on the command line, so they stay out of shell history.\n")

    say("Step 2. Check that the current key really opens everything (read-only):")
    say(f"  $ keyrotate verify --data-dir {data}")
    say(_indent(render_verify(before)) + "\n")

    say("Step 3. Rehearse: a dry run does all the work inside a transaction, then rolls it back:")
    say(f"  $ keyrotate rotate --data-dir {data} --new-key-file {new_key_path} --dry-run")
    rehearsal = RotateOptions(data / "travel.db", (old,), new_key, None, dry_run=True)
    say(_indent(render_rotation(rotate_database(rehearsal))) + "\n")

    say("Step 4. Rotate for real: back up, re-encrypt in one transaction, verify, commit, verify again,")
    say("then write the new key to data/.encryption_key:")
    say(f"  $ keyrotate rotate --data-dir {data} --new-key-file {new_key_path}")
    backup = data / "travel.db.keyrotate-backup-demo"
    real = RotateOptions(data / "travel.db", (old,), new_key, backup, key_file=data / ".encryption_key")
    say(_indent(render_rotation(rotate_database(real))) + "\n")

    say("Step 5. Confirm, read-only, that the key TREK will now read opens everything:")
    say(f"  $ keyrotate verify --data-dir {data}")
    after = verify_database(data / "travel.db", [dataclasses.replace(resolve_trek_key(data).key, source=old.source)])
    say(_indent(render_verify(after)) + "\n")
    say("Done. On a real install, also change or remove ENCRYPTION_KEY in TREK's environment before restarting it.")
    return int(ExitCode.OK if after.ok else ExitCode.VERIFY_FAILED)


def _indent(text: str) -> str:
    return "\n".join("  | " + line if line else "  |" for line in text.splitlines())
