"""One rendering interface for the operations reports (exposure, audit, backups).

A report offers a title, column names, rows of text, notes and a JSON
document; :func:`render` turns that into text for a terminal, JSON, a markdown
checklist for a ticket, or CSV for a spreadsheet. Reports never hold a key or
a plaintext, so every rendering is safe to paste anywhere.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Protocol

from keyrotate.rotation.report import printable

FORMATS = ("text", "json", "markdown", "csv")


class Renderable(Protocol):
    checklist: bool  # rows are things to do: text and markdown show a box per row

    @property
    def title(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    def rows(self) -> list[tuple[str, ...]]: ...

    def notes(self) -> list[str]: ...

    def to_json(self) -> dict[str, Any]: ...


def render(report: Renderable, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2, default=str)
    if fmt == "csv":
        return _csv(report)
    if fmt == "markdown":
        return _markdown(report)
    if fmt == "text":
        return _text(report)
    raise ValueError(f"unknown format {fmt!r}")


def _text(report: Renderable) -> str:
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


def _markdown(report: Renderable) -> str:
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


def _csv(report: Renderable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(report.columns)
    writer.writerows(report.rows())
    return buffer.getvalue()
