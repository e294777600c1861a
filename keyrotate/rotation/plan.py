"""The decision a pass leads to: how many values move, and whether committing would lose any."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keyrotate.errors import DatabaseBusyError, KeyProblemError, UndecryptableError, WrongKeyError
from keyrotate.rotation.failures import FailedSecret, name_failures, summarise_failures
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.outcome import locations
from keyrotate.rotation.report import LocationResult, unopened_by_label
from keyrotate.rotation.tallies import Tally
from keyrotate.trek.catalogue import ResolvedLocation


@dataclass(frozen=True)
class RotationPlan:
    """What a pass found: the counts that decide whether to commit, and the plan a person confirms first."""

    to_rotate: int
    to_encrypt: int
    already_new: int
    failed: int
    locations: tuple[LocationResult, ...]

    @property
    def has_work(self) -> bool:
        return bool(self.to_rotate or self.to_encrypt)


ConfirmCallback = Callable[[RotationPlan], bool]


def decide(conn: sqlite3.Connection, tallies: dict[str, Tally], resolved: Sequence[ResolvedLocation], new_index: int,
           options: RotateOptions) -> tuple[RotationPlan, tuple[FailedSecret, ...]]:
    """A pass's plan and its failures, named by row; raises instead when committing would lose a value."""
    failed = name_failures(conn, tallies)
    plan = make_plan(tallies, resolved, new_index, options.encrypt_plaintext)
    refuse_if_unopenable(plan, failed, options)
    return plan, failed


def make_plan(
    tallies: dict[str, Tally], resolved: Sequence[ResolvedLocation], new_index: int, encrypt_plaintext: bool
) -> RotationPlan:
    to_rotate = sum(sum(t.opened_by[:new_index]) for t in tallies.values())
    already = sum(t.opened_by[new_index] for t in tallies.values())
    failed = sum(t.unopened for t in tallies.values() if t.catalogued)
    to_encrypt = sum(t.encryptable_plaintext for t in tallies.values()) if encrypt_plaintext else 0
    return RotationPlan(to_rotate, to_encrypt, already, failed, locations(resolved, tallies))


def refuse_if_unopenable(plan: RotationPlan, failures: tuple[FailedSecret, ...], options: RotateOptions) -> None:
    """Stop before the commit when secrets open under no key, unless told to leave them as they are."""
    if not plan.failed:
        return
    total = plan.to_rotate + plan.already_new + plan.failed
    if not options.old_keys:
        raise KeyProblemError(
            f"{options.key_file} already holds the new key, but it opens only {plan.already_new} of {total} secrets. "
            "Give the key the others are under with --old-key-file. Nothing was written."
        )
    if plan.to_rotate == 0 and plan.already_new == 0:
        sources = ", ".join(k.source for k in options.old_keys)
        raise WrongKeyError(
            f"The old key ({sources}) opens 0 of {total} secrets, and neither does the new key. "
            "Check that it is the key TREK is running with (data/.encryption_key, or ENCRYPTION_KEY in TREK's "
            "environment). Nothing was written."
        )
    if options.skip_undecryptable:
        return
    # With --data-dir, an old key given is tried after the key TREK uses there (cli.inputs.old_keys_beside_trek).
    also = "; it adds to the key TREK uses from the data directory" if options.key_file is not None else ""
    listed = "\n".join(f"  - {line}" for _, line in
                       summarise_failures([f for f in failures if f.catalogued], unopened_by_label(plan.locations)))
    raise UndecryptableError(
        f"{plan.failed} of {total} secrets open under none of the given keys (or sit where keyrotate cannot rewrite "
        "them), so nothing was written:\n"
        f"{listed}\n"
        "If another old key exists (for example after an interrupted rotation), give it too "
        f"(--old-key-file may be repeated{also}). To rotate everything else and leave these values as they are, "
        "add --skip-undecryptable."
    )


def lost_lock_race(options: RotateOptions) -> DatabaseBusyError:
    """Why the old key opened nothing when another writer committed while this run waited for the lock."""
    return DatabaseBusyError(
        f"While keyrotate waited for the lock on {options.db_path}, another program committed changes to it, and "
        "now none of its secrets opens under the old or the new key: probably another rotation ran at the same "
        "time. Nothing was written by this run. Stop TREK and any other keyrotate run, then find the key the "
        "database is under with `keyrotate verify --key-file FILE`."
    )
