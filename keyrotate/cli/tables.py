"""Rendering a tabular report (title, columns, rows, notes) as terminal text, a markdown checklist or CSV."""

from __future__ import annotations

import csv
import io
from typing import Any, Protocol, runtime_checkable

from keyrotate.cli.printable import csv_cell, printable


@runtime_checkable
class Tabular(Protocol):
    checklist: bool  # rows are things to do: text and markdown show a box per row

    @property
    def title(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    def rows(self) -> list[tuple[str, ...]]: ...

    def notes(self) -> list[str]: ...

    def to_json(self) -> dict[str, Any]: ...


def table_text(report: Tabular) -> str:
    rows = report.rows()
    lines = [f"{printable(report.title)}: {len(rows)}"]
    width = max(len(c) for c in report.columns)
    for number, row in enumerate(rows, 1):
        first, *rest = (printable(cell) for cell in row)
        lines.append(f"{'[ ] ' if report.checklist else ''}{number}. {first}")
        lines.extend(f"       {name.ljust(width)}  {cell}"
                     for name, cell in zip(report.columns[1:], rest, strict=True) if cell)  # no blank field
    lines.append("")
    lines.extend(printable(note) for note in report.notes())
    return "\n".join(lines)


def table_markdown(report: Tabular) -> str:
    lines = [f"## {markdown_text(report.title)}", ""]
    for row in report.rows():
        first, *rest = (markdown_text(cell) for cell in row)
        details = "; ".join(f"{name}: {cell}" for name, cell in zip(report.columns[1:], rest, strict=True))
        lines.append(f"- {'[ ] ' if report.checklist else ''}**{first}** ({details})")
    notes = report.notes()
    if notes:
        lines += ["", "### Notes", ""] + [f"- {markdown_text(n)}" for n in notes]
    return "\n".join(lines)


def markdown_text(text: str) -> str:
    """``text`` safe inside a markdown list item: printable, with no table pipe or emphasis star of its own."""
    return printable(text).replace("|", "\\|").replace("*", "\\*")


def table_csv(report: Tabular) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(report.columns)
    writer.writerows([csv_cell(cell) for cell in row] for row in report.rows())  # escaped as text and markdown are
    return buffer.getvalue()
