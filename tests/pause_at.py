"""Run the real ``keyrotate`` command, paused at one point, so a test can signal it exactly there.

Usage: ``python -m tests.pause_at POINT MARKER GO keyrotate-arguments...``. At
POINT the process creates the file MARKER, then waits (up to 60 s) until the
file GO exists, and carries on. Points: the engine's named steps (see
keyrotate.crashpoints.POINTS; ``key-file-temp`` is inside the key-file write),
``zip:N`` (before the N-th backup ZIP is re-encrypted), ``zip-extracted:N``
(the N-th ZIP's travel.db is in its temporary directory), ``rows:N`` (before ``exposure`` writes its
N-th batch of records), ``emit:N`` (before ``rotate`` writes its N-th report to stdout), ``jwt-replaced:1`` (.jwt_secret
replaced, not yet said) and ``import``
(while click is being imported). The pause is patched in from here, so the
installed package carries no switch for it.
"""

from __future__ import annotations

import importlib.abc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

POINT, MARKER, GO = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])


def pause() -> None:
    MARKER.touch()
    deadline = time.monotonic() + 60
    while not GO.exists() and time.monotonic() < deadline:
        time.sleep(0.005)


class _SlowImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if name == "click":
            sys.meta_path.remove(self)
            pause()


def _counting(point: str, function: Callable[..., Any]) -> Callable[..., Any]:
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if f"{point}:{calls[0]}" == POINT:
            pause()
        return function(*args, **kwargs)

    return wrapped


if POINT == "import":
    sys.meta_path.insert(0, _SlowImport())
else:
    from keyrotate import crashpoints
    from keyrotate.operations import backup_rekey

    def named(name: str) -> None:
        if name == POINT:
            pause()

    crashpoints.observe(named)
    backup_rekey.rekey_backup = _counting("zip", backup_rekey.rekey_backup)  # type: ignore[assignment]
    backup_rekey.rotate_database = _counting("zip-extracted", backup_rekey.rotate_database)  # type: ignore[assignment]
    from keyrotate.cli import exposure_render

    exposure_render.ExposureWriter.rows = _counting("rows", exposure_render.ExposureWriter.rows)  # type: ignore[method-assign]
    from keyrotate.cli import jwt_secret, rotate

    rotate.emit = _counting("emit", rotate.emit)  # type: ignore[assignment]
    jwt_secret._announce_jwt = _counting("jwt-replaced", jwt_secret._announce_jwt)  # type: ignore[assignment]

from keyrotate.__main__ import run  # noqa: E402

sys.argv = ["keyrotate", *sys.argv[4:]]
run()
