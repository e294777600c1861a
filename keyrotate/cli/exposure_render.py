"""Writing an exposure report: a grouped checklist for people, one record per secret for machines.

Text and markdown are written after the pass, from the bounded group counts.
JSON and CSV records are written while the pass runs (:meth:`ExposureWriter.rows`),
so neither the report nor its text is ever held whole in memory. A location's
rows are formatted together: the JSON of what they share is encoded once, and
each record only fills in its own fields (the same bytes ``json.dumps`` writes).
"""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from keyrotate.cli.exposure_stream import ENCODE, csv_lines, csv_row, json_records
from keyrotate.cli.printable import printable as _clean
from keyrotate.cli.tables import markdown_text as _md
from keyrotate.operations.exposure import ExposureReport
from keyrotate.operations.exposure_groups import GroupLine, plural
from keyrotate.operations.exposure_plaintext import PLAINTEXT
from keyrotate.operations.exposure_records import ExposedSecret, SecretRows
from keyrotate.rotation.report import SCHEMA_VERSION

TITLE = "Secrets readable with the suspected key"
CSV_COLUMNS = ("what", "owner", "where", "revoke or reissue at", "group")
BEYOND_TITLE = "Beyond the encryption key (what a copy of the data directory also gives away)"
PLAINTEXT_TITLE = "Stored in plaintext"
PLAINTEXT_RISK = "Readable without any key: treat as exposed, revoke or reissue each (`keyrotate audit` lists them)."
COPIES_TITLE = "Not fixed by rotating"


class ExposureWriter:
    def __init__(self, out: TextIO, fmt: str, database: str, key_sources: Iterable[str]) -> None:
        if fmt not in ("text", "markdown", "json", "csv"):
            raise ValueError(f"unknown format {fmt!r}")
        self.out, self.fmt = out, fmt
        self.database, self.key_sources = database, list(key_sources)
        self._first = True
        self._csv = fmt == "csv"  # every CSV line is written by csv_row (cells safe for a terminal and a spreadsheet)
        self.records = 0  # secrets written so far
        self.started = False  # something is on ``out``
        self._in_array = False  # JSON: between records of "secrets", where the document can still be closed
        self._writing = False  # a write was cut short: what is on ``out`` ends mid-record

    def _put(self, text: str) -> None:
        self.started = True
        self._writing = True
        self.out.write(text)
        self._writing = False

    def begin(self) -> None:
        if self._csv:
            self._put(csv_row(CSV_COLUMNS))
        elif self.fmt == "json":
            head = {"schema_version": SCHEMA_VERSION, "command": "exposure", "database": self.database,
                    "key_sources": self.key_sources}
            self._put(json.dumps(head, indent=2, default=str)[:-2] + ',\n  "secrets": [')
            self._in_array = True

    def secret(self, secret: ExposedSecret) -> None:
        self.rows(SecretRows.of(secret))

    def rows(self, batch: SecretRows) -> None:
        if self._csv:
            self._put(csv_lines(batch))
        elif self.fmt == "json" and batch.heads:
            self._put(("\n    " if self._first else ",\n    ") + ",\n    ".join(json_records(batch)))
            self._first = False
        self.records += len(batch.heads)

    def close_early(self, error: dict[str, Any]) -> bool:
        """A JSON stream stopped during the pass: end the document with ``"complete": false`` and ``error``.
        False when that cannot be done (not JSON, past the records, or a write was cut short mid-record)."""
        if self.fmt != "json" or not self._in_array or self._writing:
            return False
        tail = json.dumps({"complete": False, "error": error}, indent=2, default=str)
        self._put(("\n  ],\n" if not self._first else "],\n") + tail[2:] + "\n")
        self._in_array = False
        return True

    def end(self, report: ExposureReport) -> None:
        self._in_array = False
        self._writing = True  # whatever is cut short from here leaves a report that cannot be closed
        self.started = True
        if self._csv:
            for finding in report.beyond:
                self.out.write(csv_row((f"{finding.count} {finding.what}", "instance", finding.where,
                                        f"{finding.risk} Do: {finding.action}", BEYOND_TITLE)))
            for plain in report.plaintext_found:
                self.out.write(csv_row((f"{_count(plain.what, plain.values)} ({plain.kind})", "", plain.location,
                                        f"{PLAINTEXT_RISK} Then: {plain.fix}", PLAINTEXT_TITLE)))
            for copy in report.copies:
                self.out.write(csv_row((copy.kind, "", copy.path, copy.note, COPIES_TITLE)))
        elif self.fmt == "json":
            self.out.write("\n  ],\n" if not self._first else "],\n")
            for name, groups in (("groups", report.groups), ("plaintext_groups", report.plaintext_groups)):
                self.out.write(f'  "{name}": [')  # one line per user: written one at a time, never held whole
                for number, line in enumerate(groups.lines()):
                    self.out.write(("\n    " if number == 0 else ",\n    ") + ENCODE(line.to_json()))
                self.out.write("\n  ],\n" if groups.total else "],\n")
            body = json.dumps(tail_json(report), indent=2, default=str)
            self.out.write(body[2:] + "\n")
        else:
            lines = _text(report) if self.fmt == "text" else _markdown(report)
            while chunk := list(islice(lines, 1000)):  # one line per user: never the whole text at once
                self.out.write("".join(line + "\n" for line in chunk))


def render_exposure(report: ExposureReport, fmt: str) -> str:
    """A report already in memory (its ``secrets`` kept), in any format."""
    out = io.StringIO()
    writer = ExposureWriter(out, fmt, report.database, report.key_sources)
    writer.begin()
    for secret in report.secrets:
        writer.secret(secret)
    writer.end(report)
    return out.getvalue()


def tail_json(report: ExposureReport) -> dict[str, Any]:
    """What follows the secrets and the group lines in the JSON document (and in ``rotate --incident --json``)."""
    return {"beyond": [f.to_json() for f in report.beyond],
            "copies": [c.to_json() for c in report.copies],
            "plaintext": [dataclasses.asdict(f) for f in report.plaintext_found],
            "totals": totals(report)}


def _listed(report: ExposureReport) -> str:
    listed = report.plaintext_groups.total
    if listed == report.plaintext:
        return f"{listed} value(s)"
    return (f"{report.plaintext} value(s) ({listed} listed by owner below; the others are inside JSON values or TOTP seeds: "
            "`keyrotate audit` names their locations)")


def _count(what: str, n: int) -> str:
    return plural(what, n) if n != 1 else f"1 {what}"


def totals(report: ExposureReport) -> dict[str, Any]:
    return {"exposed": report.exposed, "users": report.groups.users(), "plaintext": report.plaintext,
            "not_opened": report.not_opened, "by_group": report.groups.per_tier()}


def _headline(report: ExposureReport) -> list[str]:
    groups = report.groups
    instance = groups.per_tier().get("Instance credentials", 0)
    lines = [f"{TITLE}: {report.exposed} ({instance} instance, {report.exposed - instance} of "
             f"{groups.users()} user(s)), opened with {', '.join(report.key_sources)}."]
    lines += [f"  {title}: {n}" for title, n in groups.per_tier().items()]
    lines.append("Revoke or reissue each one where it was issued, worst first: rotating the key protects the "
                 "database from now on, not what already leaked.")
    return [_clean(line) for line in lines]


def _notes(report: ExposureReport) -> list[str]:
    notes = []
    if report.not_opened:
        notes.append(f"{report.not_opened} other encrypted value(s) do not open with the suspected key.")
    if report.plaintext:
        audit = shlex.join(["keyrotate", "audit", "--db", str(Path(report.database).absolute())])
        fix = (f"this run encrypted {report.plaintext_encrypted} of them (--encrypt-plaintext), which protects them "
               "from now on, not in a copy taken before" if report.plaintext_encrypted else
               "`--encrypt-plaintext` added to the rotation encrypts those TREK reads encrypted")
        notes.append(f"{report.plaintext} value(s) in secret locations are stored in PLAINTEXT: anyone with a copy "
                     f"of the database could read them, key or not. Treat them as exposed; `{audit}` lists them, "
                     f"and {fix}.")
        notes += [f"PLAINTEXT: {_count(p.what, p.values)} in {p.location} ({p.kind})" for p in report.plaintext_found]
    for copy in report.copies:
        notes.append(f"NOT FIXED BY ROTATING: {copy.path} ({copy.kind}): {copy.note}")
    notes.append("Copies keyrotate cannot see (off-site backups, volume snapshots, host backups) still open with "
                 "the old key: delete them, or treat every secret above as exposed for as long as they exist.")
    return [_clean(n) for n in notes]


def _sections(report: ExposureReport) -> Iterator[tuple[str, int, list[tuple[str, str]], Iterator[GroupLine]]]:
    """Per tier: its title, its count, the kinds users have in it with where to revoke each, and its lines."""
    groups = report.groups
    for tier in sorted(groups.tiers):
        yield tier[1], groups.tiers[tier], groups.user_actions(tier), groups.tier_lines(tier)


def _text(report: ExposureReport) -> Iterator[str]:
    yield from _headline(report)
    yield ""
    for number, (title, count, actions, group) in enumerate(_sections(report), 1):
        yield f"{number}. {title} ({count})"
        yield from (_clean(f"   where: {what} -> {action}") for what, action in actions)
        for line in group:
            if line.owner_id is None:
                yield _clean(f"   [ ] {line.summary()} -> {line.actions[0][1]}")
            else:
                yield _clean(f"   [ ] {line.owner}: {line.summary()}")
        yield ""
    if report.beyond:
        yield BEYOND_TITLE
        yield from (_clean(f"   [{'x' if finding.settled else ' '}] {finding.line()}") for finding in report.beyond)
        yield ""
    plain = report.plaintext_groups
    if plain.total:
        yield f"{PLAINTEXT[1]}: {_listed(report)}"
        yield from (_clean(f"   where: {what} -> {action}") for what, action in plain.user_actions(PLAINTEXT))
        for line in plain.lines():
            yield _clean(f"   [ ] {line.owner}: {line.summary()}" if line.owner_id is not None
                         else f"   [ ] {line.summary()} -> {line.actions[0][1]}")
        yield ""
    yield from _notes(report)


def _markdown(report: ExposureReport) -> Iterator[str]:
    yield from [f"## {TITLE}", ""] + [f"- {_md(line)}" for line in _headline(report)] + [""]
    for title, count, actions, group in _sections(report):
        yield from [f"### {_md(title)} ({count})", ""]
        yield from (f"- where: {_md(what)} → {_md(action)}" for what, action in actions)
        for line in group:
            if line.owner_id is None:
                yield f"- [ ] **{_md(line.summary())}** → {_md(line.actions[0][1])}"
            else:
                yield f"- [ ] **{_md(line.owner)}**: {_md(line.summary())}"
        yield ""
    if report.beyond:
        yield from [f"### {BEYOND_TITLE}", ""]
        yield from (f"- [{'x' if f.settled else ' '}] **{_md(f.what)}**: {_md(f.line().removeprefix(f.what + ': '))}"
                    for f in report.beyond)
        yield ""
    plain = report.plaintext_groups
    if plain.total:
        yield from [f"### {PLAINTEXT[1]}", "", f"- {_md(_listed(report))}"]
        yield from (f"- where: {_md(what)} → {_md(action)}" for what, action in plain.user_actions(PLAINTEXT))
        for line in plain.lines():
            yield (f"- [ ] **{_md(line.owner)}**: {_md(line.summary())}" if line.owner_id is not None
                   else f"- [ ] **{_md(line.summary())}** → {_md(line.actions[0][1])}")
        yield ""
    yield from ["### Notes", ""] + [f"- {_md(n)}" for n in _notes(report)]
