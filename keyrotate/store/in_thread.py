"""Work run on a daemon thread of its own, its result (or what it raised) handed back once, on request."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class InThread(Generic[T]):
    """``work`` run in a daemon thread; :meth:`result` waits for it and raises what it raised.

    For reads on a connection of their own that overlap the rotation pass: SQLite
    does its work without holding Python's lock.
    """

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._work = work
        self._outcome: tuple[bool, Any] = (False, None)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = (True, self._work())
        except BaseException as exc:  # handed to the caller by result()
            self._outcome = (False, exc)

    def result(self) -> T:
        self._thread.join()
        ok, value = self._outcome
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


class StoppableRead(Generic[T]):
    """:class:`InThread` for reading on a connection of its own, which :meth:`stop` can cut short.

    ``connect`` makes the connection (in the thread) and ``work`` reads on it,
    checking :attr:`stopped` between its steps; the connection is closed when
    ``work`` returns or raises. :meth:`stop` interrupts whatever statement runs
    and waits until the connection is closed, so nothing is left open (with its
    ``-wal`` and ``-shm``) behind an error or a Ctrl-C.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], work: Callable[[sqlite3.Connection], T],
                 name: str) -> None:
        self._connect = connect
        self._work = work
        self._name = name
        self._lock = threading.Lock()  # SQLite: never interrupt a connection that is closing
        self._open: sqlite3.Connection | None = None
        self.stopped = False
        self._done: InThread[T] | None = None

    def start(self) -> None:
        self._done = InThread(self._read, self._name)

    def _read(self) -> T:
        conn = self._connect()
        with self._lock:
            self._open = conn
        try:
            return self._work(conn)
        finally:
            with self._lock:
                self._open = None
                conn.close()

    def result(self) -> T:
        """What ``work`` returned; raises what it (or ``connect``) raised."""
        assert self._done is not None, "start() first"
        return self._done.result()

    def stop(self) -> None:
        """Cut the reading short if it still runs, and wait until its connection is closed."""
        self.stopped = True
        with self._lock:
            if self._open is not None:
                self._open.interrupt()
        if self._done is not None:
            with suppress(Exception):  # what it raised ("interrupted", or any error) no longer matters
                self._done.result()
