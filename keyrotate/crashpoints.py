"""Named steps of a rotation, announced to observers; none are registered in a normal run.

The product only calls :func:`crash_point` at each step. It reads no
environment variable, opens no file and changes nothing: the crash-safety
tests register an observer from their own launcher (``tests/kill_at.py``
SIGKILLs the process there, ``tests/pause_at.py`` pauses it), so the installed
package carries no test switch.
"""

from __future__ import annotations

from collections.abc import Callable

# In the order a rotation reaches them. Outside this list: "after-new-key" (rotate --generate-new-key:
# the new key file exists and the database is untouched), reached before any of these; "jwt-secret"
# (rotate-jwt-secret, or rotate --rotate-jwt-secret after everything above): .encryption_key is written
# (created first on a .jwt_secret-fallback install), .jwt_secret not yet replaced.
# "backup-copy" and "rotate-batch" are announced by the test launchers, which patch the copy and the
# batch progress (a normal run copies the backup in one step and counts nothing extra).
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

Observer = Callable[[str], None]

_observers: list[Observer] = []


def observe(observer: Observer) -> None:
    """Call ``observer(name)`` each time a named step is reached (tests only)."""
    _observers.append(observer)


def crash_point(name: str) -> None:
    """Announce the step ``name`` to the registered observers (none in a normal run)."""
    for observer in tuple(_observers):
        observer(name)
