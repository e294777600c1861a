"""The one renderer interface: every command hands its report and a format here, and gets the text back.

:func:`render` is the only place a format picks its renderer. Every report has a
JSON form (its ``to_json`` document, or for an exposure report the same stream
the ``exposure`` command writes); tabular reports (a title, column names, rows,
notes) also come as text for a terminal, a markdown checklist for a ticket, or
CSV for a spreadsheet; rotation and verification reports have a text summary.
Reports never hold a key or a plaintext, so every rendering is safe to paste anywhere.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Protocol, runtime_checkable

import click

from keyrotate.cli.exposure_render import render_exposure
from keyrotate.operations.exposure import ExposureReport
from keyrotate.rotation.report import RotationReport, VerifyReport, printable, render_rotation, render_verify

FORMATS = ("text", "json", "markdown", "csv")


@runtime_checkable
class Report(Protocol):
    def to_json(self) -> dict[str, Any]: ...


@runtime_checkable
class Tabular(Report, Protocol):
    checklist: bool  # rows are things to do: text and markdown show a box per row

    @property
    def title(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    def rows(self) -> list[tuple[str, ...]]: ...

    def notes(self) -> list[str]: ...


def render(report: object, fmt: str) -> str:
    """``report`` in format ``fmt`` (one of :data:`FORMATS`), without a final newline of its own."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if isinstance(report, ExposureReport):
        return render_exposure(report, fmt).removesuffix("\n")
    if fmt == "json" and isinstance(report, Report):
        return json.dumps(report.to_json(), indent=2, default=str)
    if fmt == "text" and isinstance(report, RotationReport):
        # after a commit the rotate command prints fuller operator steps of its own
        return render_rotation(report, with_next_steps=not report.committed)
    if fmt == "text" and isinstance(report, VerifyReport):
        return render_verify(report)
    if isinstance(report, Tabular):
        return {"text": _text, "markdown": _markdown, "csv": _csv}[fmt](report)
    raise ValueError(f"a {type(report).__name__} has no {fmt} form")


def emit(report: object, fmt: str) -> None:
    """The report on stdout, for a file, a pipe or a ticket."""
    click.echo(render(report, fmt))


def _text(report: Tabular) -> str:
    rows = report.rows()
    lines = [f"{printable(report.title)}: {len(rows)}"]
    width = max(len(c) for c in report.columns)
    for number, row in enumerate(rows, 1):
        first, *rest = (printable(cell) for cell in row)
        lines.append(f"{'[ ] ' if report.checklist else ''}{number}. {first}")
        lines.extend(f"       {name.ljust(width)}  {cell}" for name, cell in zip(report.columns[1:], rest, strict=True))
    lines.append("")
    lines.extend(printable(note) for note in report.notes())
    return "\n".join(lines)


def _markdown(report: Tabular) -> str:
    lines = [f"## {_md(report.title)}", ""]
    for row in report.rows():
        first, *rest = (_md(cell) for cell in row)
        details = "; ".join(f"{name}: {cell}" for name, cell in zip(report.columns[1:], rest, strict=True))
        lines.append(f"- {'[ ] ' if report.checklist else ''}**{first}** ({details})")
    notes = report.notes()
    if notes:
        lines += ["", "### Notes", ""] + [f"- {_md(n)}" for n in notes]
    return "\n".join(lines)


def _md(text: str) -> str:
    return printable(text).replace("|", "\\|").replace("*", "\\*")


def _csv(report: Tabular) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(report.columns)
    writer.writerows(report.rows())
    return buffer.getvalue()
