"""What the CLI says when a run is interrupted: only what is true at that moment.

Before any write: nothing was written. Inside the transaction: it was rolled
back. After the commit: the database is rotated; the message says what is done,
what is left, and the one command that finishes it (exit code 13).
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

import click

from keyrotate.errors import CancelledError, InterruptedAfterCommitError
from keyrotate.interrupts import ROLLED_BACK, Interrupted, signal_number
from keyrotate.rotation.report import RotationReport

# rotate options a rerun leaves out: a dry run never commits, and the new key is no longer generated but read
# from where it was saved. (--backup PATH stays: a rerun saves the old key beside that backup; --incident stays:
# a rerun reads the checklist from the pre-rotation backup.)
_NOT_RERUN = {"dry_run", "generate_new_key", "new_key_out"}


def signal_name(interrupt: KeyboardInterrupt) -> str:
    return signal.Signals(signal_number(interrupt)).name


def stopped_before_commit(interrupt: KeyboardInterrupt, unused_new_key: Path | None = None) -> CancelledError:
    """Exit 12: nothing was written (the transaction, if it had begun, was rolled back)."""
    stage = interrupt.stage if isinstance(interrupt, Interrupted) else None
    what = ("the transaction was rolled back and nothing was written" if stage == ROLLED_BACK
            else "nothing was written")
    note = (f"\nThe new key in {unused_new_key} was not used; delete it, or reuse it with --new-key-file "
            f"{unused_new_key}." if unused_new_key else "")
    return CancelledError(f"Interrupted ({signal_name(interrupt)}); {what}.{note}")


def rerun_command(new_key_out: Path | None, *, done: frozenset[str] = frozenset()) -> str:
    """The running ``rotate`` command as it must be given again to finish the job; ``done``: options (parameter
    names) whose work is done and must not be done twice (--rotate-jwt-secret signs everyone out again)."""
    context = click.get_current_context()
    words = ["keyrotate", context.info_name or "rotate"]
    for param in context.command.params:
        value = context.params.get(param.name or "")
        if (not isinstance(param, click.Option) or param.name in _NOT_RERUN or param.name in done
                or value in (None, (), param.default)):
            continue
        flag = max(param.opts, key=len)
        if param.is_flag:
            words += [flag] if value else param.secondary_opts[:1]  # --yes, --no-vacuum
            continue
        for item in value if param.multiple else (value,):
            words += [flag, str(item)]
    if new_key_out is not None:
        words += ["--new-key-file", str(new_key_out)]
    return shlex.join(words)


def stopped_after_commit(why: str, report: RotationReport, *, left: list[str], rerun: str
                         ) -> InterruptedAfterCommitError:
    """Exit 13: the database is rotated; ``why`` it stopped ("Interrupted (SIGINT)"), what is done, what is left,
    and the command that finishes it."""
    done = [f"every secret in {report.database} is under the new key and verified"]
    if report.key_file_written:
        done.append(f"{report.key_file_written} holds the new key")
    if report.old_key_saved:
        done.append(f"the old key is saved in {report.old_key_saved}")
    if left:
        not_done = f"Not done: {'; '.join(left)}."
    else:
        not_done = "Nothing else was left to do; the command below only confirms it."
    return InterruptedAfterCommitError(
        f"{why} after the commit. Done: {'; '.join(done)}. {not_done}\n"
        f"To finish, run the same command again:\n  {rerun}"
    )
