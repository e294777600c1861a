"""Work run on a daemon thread of its own, its result (or what it raised) handed back once, on request."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
