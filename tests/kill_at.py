"""Run the real ``keyrotate`` command with kill points armed, so a test can SIGKILL it at a named step.

Usage: ``python -m tests.kill_at keyrotate-arguments...`` with, in the environment,
``KEYROTATE_TEST_KILL_AT=<point>`` (or ``<point>:<n>``, the n-th time the point
is reached): the process sends itself SIGKILL there (no cleanup, no ``finally``,
like a power cut or ``kill -9``); or ``KEYROTATE_TEST_MARK_AT=<point>:<file>``:
it creates ``file`` there and carries on, so a harness can kill a few
milliseconds later, inside COMMIT. Points: keyrotate.crashpoints.POINTS plus
``after-new-key`` and ``jwt-secret``. A malformed or unknown point is ignored.

This is test code: the variables are read here, never by the installed
package (``python -m keyrotate`` ignores them). From here the backup is copied
16 pages at a time (``backup-copy`` after each step, so a kill lands mid-copy)
and ``rotate-batch`` is announced after each batch written.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from typing import Any

from keyrotate import crashpoints
from keyrotate.rotation import scanning
from keyrotate.store import backup

KILL_VARIABLE = "KEYROTATE_TEST_KILL_AT"
MARK_VARIABLE = "KEYROTATE_TEST_MARK_AT"

_hits: dict[str, int] = {}


def kill_or_mark(name: str) -> None:
    mark = os.environ.get(MARK_VARIABLE)
    if mark and mark.partition(":")[0] == name:
        with open(mark.partition(":")[2], "w"):
            pass
    point, _, nth = os.environ.get(KILL_VARIABLE, "").partition(":")
    if point != name or not (nth or "1").isdigit():
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def stepwise_copy(source: sqlite3.Connection, target: sqlite3.Connection) -> None:
    source.backup(target, pages=16, progress=lambda *_: crashpoints.crash_point("backup-copy"))


_scanner_run = scanning.Scanner.run


def run_announcing_batches(self: scanning.Scanner, phase: str,
                           progress: scanning.ProgressCallback | None = None) -> Any:
    def announced(phase: str, label: str, advanced: int, total: int | None) -> None:
        if progress is not None:
            progress(phase, label, advanced, total)
        if phase == "rotate" and advanced:
            crashpoints.crash_point("rotate-batch")

    return _scanner_run(self, phase, announced)


def arm() -> None:
    crashpoints.observe(kill_or_mark)
    backup.copy_pages = stepwise_copy  # type: ignore[assignment]
    scanning.Scanner.run = run_announcing_batches  # type: ignore[method-assign]


if __name__ == "__main__":
    arm()
    from keyrotate.__main__ import run

    sys.argv = ["keyrotate", *sys.argv[1:]]
    run()
