"""Named points where the crash-safety tests make keyrotate kill itself.

``KEYROTATE_TEST_KILL_AT=<point>`` (or ``<point>:<n>`` for the n-th time the
point is reached) makes the process send itself SIGKILL there: no cleanup, no
``finally``, exactly like a power cut or ``kill -9``.
``KEYROTATE_TEST_MARK_AT=<point>:<file>`` instead creates ``file`` there and
carries on, so a harness can kill a few milliseconds later, inside COMMIT.
Without the variables, :func:`crash_point` only reads the environment, so
normal runs are unaffected.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT_VARIABLE = "KEYROTATE_TEST_KILL_AT"
MARK_VARIABLE = "KEYROTATE_TEST_MARK_AT"

# In the order a rotation reaches them. Outside this list: "after-new-key" (rotate --generate-new-key:
# the new key file exists and the database is untouched), reached before any of these; "jwt-secret"
# (rotate-jwt-secret, or rotate --rotate-jwt-secret after everything above): .encryption_key is written
# (created first on a .jwt_secret-fallback install), .jwt_secret not yet replaced.
POINTS = (
    "backup-copy",  # the backup is being copied (a partial file exists)
    "backup-done",  # the backup is in place, nothing rewritten yet
    "rotate-batch",  # after a batch of new values is written inside the transaction
    "before-commit",  # every value rewritten, COMMIT not yet issued
    "after-commit",  # committed, -wal not yet checkpointed
    "after-checkpoint",  # checkpointed, not yet verified on a fresh connection
    "after-verify",  # verified, data/.encryption_key not yet written
    "key-file-temp",  # the new key is in the temporary file, not yet renamed over .encryption_key
    "key-file-renamed",  # .encryption_key holds the new key
)

_hits: dict[str, int] = {}


def armed() -> bool:
    return ENVIRONMENT_VARIABLE in os.environ or MARK_VARIABLE in os.environ


def crash_point(name: str) -> None:
    """SIGKILL this process if the test hook names this point."""
    mark = os.environ.get(MARK_VARIABLE)
    if mark and mark.partition(":")[0] == name:
        with open(mark.partition(":")[2], "w"):
            pass
    wanted = os.environ.get(ENVIRONMENT_VARIABLE)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name or not (nth or "1").isdigit():
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
