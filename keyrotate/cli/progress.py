"""Progress bars on stderr (tqdm), shown only when a person is watching."""

from __future__ import annotations

import sys
from typing import Any

from keyrotate.rotation.scanning import ProgressCallback


class Progress:
    """tqdm bars on stderr, one per location, only when a person is watching."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._current: tuple[str, str] | None = None

    def __call__(self, phase: str, label: str, advanced: int, total: int | None) -> None:
        from tqdm import tqdm

        if (phase, label) != self._current:
            self.close()
            self._current = (phase, label)
            self._bar = tqdm(total=total, desc=f"{phase}: {label}", unit=" values", leave=False,
                             file=sys.stderr, dynamic_ncols=True)
        if advanced:
            self._bar.update(advanced)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def callback(self) -> ProgressCallback | None:
        return self if self.enabled else None


def progress_bars(json_output: bool, quiet: bool) -> Progress:
    return Progress(enabled=sys.stderr.isatty() and not json_output and not quiet)
