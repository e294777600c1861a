"""The one renderer interface: every command hands its report and a format here, and gets the text back.

:func:`render` is the only place a format picks its renderer. Every report has a
JSON form (its ``to_json`` document, or for an exposure report the same stream
the ``exposure`` command writes); tabular reports (cli/tables.py) also come as
text for a terminal, a markdown checklist for a ticket, or CSV for a spreadsheet;
rotation and verification reports have a text summary. Reports never hold a key
or a plaintext, so every rendering is safe to paste anywhere.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import click

from keyrotate.cli.summaries import render_rotation, render_verify
from keyrotate.cli.tables import Tabular, table_csv, table_markdown, table_text
from keyrotate.rotation.report import RotationReport, VerifyReport

if TYPE_CHECKING:
    from keyrotate.operations.exposure import ExposureReport

FORMATS = ("text", "json", "markdown", "csv")
_TABLE_RENDERERS = {"text": table_text, "markdown": table_markdown, "csv": table_csv}


@runtime_checkable
class Report(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def render(report: object, fmt: str) -> str:
    """``report`` in format ``fmt`` (one of :data:`FORMATS`), without a final newline of its own."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    exposure = _as_exposure(report)
    if exposure is not None:
        # Imported here: the exposure renderer and the scan under it are ~80 ms of imports rotate and verify skip.
        from keyrotate.cli.exposure_render import render_exposure

        return render_exposure(exposure, fmt).removesuffix("\n")
    if fmt == "json" and isinstance(report, Report):
        return json.dumps(report.to_json(), indent=2, default=str)
    if fmt == "text" and isinstance(report, RotationReport):
        # after a commit the rotate command prints fuller operator steps of its own
        return render_rotation(report, with_next_steps=not report.committed)
    if fmt == "text" and isinstance(report, VerifyReport):
        return render_verify(report)
    if isinstance(report, Tabular):
        return _TABLE_RENDERERS[fmt](report)
    raise ValueError(f"a {type(report).__name__} has no {fmt} form")


def _as_exposure(report: object) -> ExposureReport | None:
    """``report`` if it is an exposure report: there is none before keyrotate.operations.exposure is imported."""
    module = sys.modules.get("keyrotate.operations.exposure")
    if module is not None and isinstance(report, module.ExposureReport):
        return cast("ExposureReport", report)
    return None


def emit(report: object, fmt: str) -> None:
    """The report on stdout, for a file, a pipe or a ticket."""
    click.echo(render(report, fmt))
