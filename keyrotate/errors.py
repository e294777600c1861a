"""Every way keyrotate can refuse or fail, each with its own exit code.

The CLI catches :class:`KeyrotateError` and nothing narrower. Messages name
files, tables, columns and row ids; they never contain a key or a secret.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes. Documented in the README; keep them stable."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    NOT_FOUND = 3
    NOT_A_DATABASE = 4
    NOT_TREK = 5
    BAD_KEY = 6
    WRONG_KEY = 7
    UNDECRYPTABLE = 8
    VERIFY_FAILED = 9
    DATABASE_BUSY = 10
    CANNOT_WRITE = 11
    CANCELLED = 12
    INTERRUPTED_AFTER_COMMIT = 13
    STDOUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for any tool whose reader went away (`| head`)


class KeyrotateError(Exception):
    """Base class. ``message`` says what happened and what to do next."""

    exit_code: ExitCode = ExitCode.INTERNAL
    committed = False  # raised once the rotation was committed: the database is under the new key

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self, message: str | None = None) -> dict[str, object]:
        """The ``error`` member of a JSON document (``message`` in place of this error's own, if given)."""
        return {"exit_code": int(self.exit_code), "kind": self.exit_code.name.lower(),
                "message": self.message if message is None else message, "committed": self.committed}


class InputNotFoundError(KeyrotateError):
    """A database path, data directory or key file that is not there."""

    exit_code = ExitCode.NOT_FOUND


class NotADatabaseError(KeyrotateError):
    """Not SQLite at all, or SQLite that fails its integrity check."""

    exit_code = ExitCode.NOT_A_DATABASE


class NotTrekError(KeyrotateError):
    """A healthy SQLite database that TREK did not write."""

    exit_code = ExitCode.NOT_TREK


class KeyProblemError(KeyrotateError):
    """A key that cannot be used: empty, unreadable, or the same as the other."""

    exit_code = ExitCode.BAD_KEY


class WrongKeyError(KeyrotateError):
    """The old key(s) open none of the database's secrets."""

    exit_code = ExitCode.WRONG_KEY


class UndecryptableError(KeyrotateError):
    """Some catalogued secrets open under no old key; nothing was written."""

    exit_code = ExitCode.UNDECRYPTABLE


class VerificationError(KeyrotateError):
    """A secret did not read back as expected."""

    exit_code = ExitCode.VERIFY_FAILED


class DatabaseBusyError(KeyrotateError):
    """TREK (or another program) holds the database."""

    exit_code = ExitCode.DATABASE_BUSY


class CannotWriteError(KeyrotateError):
    """Read-only file or directory, full disk, or a failed backup."""

    exit_code = ExitCode.CANNOT_WRITE


class CancelledError(KeyrotateError):
    """The user said no, or interrupted the run before anything was written."""

    exit_code = ExitCode.CANCELLED


class InterruptedAfterCommitError(KeyrotateError):
    """Stopped once the rotation was committed (a signal, or the key file could not be written): the message says
    what is left and the command that finishes it."""

    exit_code = ExitCode.INTERRUPTED_AFTER_COMMIT
    committed = True
