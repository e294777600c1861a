"""Ctrl-C, SIGTERM and SIGHUP: where a run may stop, and what it had done when it did.

SIGTERM and SIGHUP kill a Python process without running a single ``finally``
(no rollback, temporary files left behind). :func:`install` makes all three
raise :class:`Interrupted` instead, the way Ctrl-C raises KeyboardInterrupt.
A :class:`Hold` defers them across a window that must not be cut short: from
a rotation's COMMIT until the key file holds the new key, stopping halfway
would leave TREK with a database it cannot read. Nothing here prints: a held
signal is reported through the caller's notice callback.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Where an interrupted rotation stopped.
BEFORE_WRITING = "before-writing"  # nothing was written
ROLLED_BACK = "rolled-back"  # inside the transaction: rolled back, nothing was written
COMMITTED = "committed"  # the rotation is committed (and, with a key file, the key file holds the new key)


class Interrupted(KeyboardInterrupt):
    """A signal asked the run to stop. ``stage`` and ``report`` say what it had done by then."""

    def __init__(self, signum: int = signal.SIGINT, *, stage: str | None = None, report: Any = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.stage = stage
        self.report = report  # the RotationReport of a rotation that was committed


def signal_number(interrupt: KeyboardInterrupt) -> int:
    return interrupt.signum if isinstance(interrupt, Interrupted) else signal.SIGINT


_raised: list[int] = []  # the signal :func:`_raise` turned into Interrupted since :func:`install`, if any


def _raise(signum: int, _frame: FrameType | None) -> None:
    """The first signal stops the run; later ones are ignored. An operator who presses Ctrl-C again while the
    first is being handled must not cut short the rollback, the backup's removal and the clean-up it started."""
    if _raised:
        return
    _raised.append(signum)
    raise Interrupted(signum)


def raised() -> int:
    """How many signals :func:`_raise` turned into :class:`Interrupted` since :func:`install` (0 or 1)."""
    return len(_raised)


def reraise_swallowed(before: int) -> None:
    """Raise :class:`Interrupted` again if a signal was raised since :func:`raised` gave ``before``.

    For code SQLite calls back (an application-defined function): the signal handler runs there, and SQLite
    turns what it raises into an ``OperationalError`` ("user-defined function raised exception"), which would
    otherwise end the run with a traceback instead of the rollback's message.
    """
    if len(_raised) > before:
        raise Interrupted(_raised[-1])


Handlers = dict[int, Any]


def install() -> Handlers:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (main thread only); returns what they replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _raised.clear()
    return {signum: signal.signal(signum, _raise) for signum in SIGNALS}


def ignore() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP from now on (main thread only): for a process that only exits.

    Python gives its own handlers back to the default action while it shuts down, so a signal then
    would end the process by that signal (exit 130 for Ctrl-C) after keyrotate chose its exit code.
    """
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


@contextmanager
def held_back() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait until the block ends, then stop the run as usual: for output that must
    come out whole (a run's last report: a cut one and an error document after it would be two)."""
    hold = Hold()
    hold.start("writing the report")
    try:
        yield
    finally:
        pending = hold.release()
    if pending is not None:
        _raise(pending, None)


def restore(previous: Handlers) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


class Hold:
    """Defers SIGINT, SIGTERM and SIGHUP from :meth:`start` until :meth:`release`.

    ``doing`` says what is being finished; each signal that arrives meanwhile is
    reported through ``notice`` with it. Outside the main thread no signal
    arrives, so nothing is held.
    """

    def __init__(self, notice: Callable[[str], None] | None = None) -> None:
        self.notice = notice
        self.doing = ""
        self.stage = BEFORE_WRITING
        self._previous: Handlers | None = None
        self._pending: int | None = None

    def start(self, doing: str) -> None:
        self.doing = doing
        if self._previous is None and threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._hold) for signum in SIGNALS}

    def _hold(self, signum: int, _frame: FrameType | None) -> None:
        if self._pending is None:
            self._pending = signum
        if self.notice is not None:
            with suppress(Exception):  # never let the report of a signal break the work it waits for
                self.notice(f"{signal.Signals(signum).name} received: finishing first ({self.doing}). "
                            "keyrotate stops as soon as that is done; stopping earlier would leave TREK "
                            "with a database it cannot read.")

    def release(self) -> int | None:
        """End the window. Returns a held signal whose previous handler is Python code (the caller
        raises for it); one whose previous action was the default one is delivered again now."""
        previous, self._previous = self._previous, None
        pending, self._pending = self._pending, None
        if previous is None:
            return None
        restore(previous)
        if pending is None:
            return None
        handler = previous[pending]
        if callable(handler):
            return pending
        if handler in (signal.SIG_DFL, None):
            os.kill(os.getpid(), pending)  # what it would have done, only later
        return None
