"""Exposed secrets as JSON records and CSV rows, a location's batch at a time: byte for byte what ``json.dumps``
and ``csv.writer`` write, several times faster (what a batch's rows share is encoded once)."""

from __future__ import annotations

import csv
import io
import json
from json.encoder import encode_basestring_ascii as _string

from keyrotate.cli.printable import csv_cell
from keyrotate.operations.exposure_records import SecretHead, SecretRows

ENCODE = json.JSONEncoder(default=str).encode  # one encoder for every record: json.dumps builds one per call


def json_records(batch: SecretRows) -> list[str]:
    """Each secret exactly as ``json.dumps(secret.to_json())`` writes it, without building the dict."""
    shared = (f'"location": {_string(batch.location)}, "table": {_string(batch.table)}, '
              f'"column": {_string(batch.column)}, "row": {{')
    names = [f"{_string(name)}: " for name in batch.identity]
    action = f', "action": {_string(batch.action)}, "group": '
    parts: dict[SecretHead, tuple[str, str]] = {}  # a head's JSON: before the row, after the where

    def ends_of(head: SecretHead) -> tuple[str, str]:
        what, owner, owner_id, owner_name, group = head
        ends = parts[head] = (f'{{"what": {_string(what)}, "owner": {_string(owner)}, "owner_id": {_value(owner_id)}, '
                              f'"owner_name": {_value(owner_name)}, {shared}', f"{action}{_string(group)}}}")
        return ends

    out: list[str] = []
    append = out.append
    if len(names) == 1 and batch.paths is None:  # nearly every secret of a large database: one id, whole value
        one = names[0]
        where_head = f"{batch.table}.{batch.column} ({batch.identity[0]}="
        quoted_head = _string(where_head)[:-1]  # an integer id needs no escaping: the where's JSON is built here
        for head, (value,) in zip(batch.heads, batch.values, strict=True):
            ends = parts.get(head) or ends_of(head)
            if value.__class__ is int:
                text = int.__repr__(value)
                append(f'{ends[0]}{one}{text}}}, "path": "", "where": {quoted_head}{text})"{ends[1]}')
            else:
                append(f'{ends[0]}{one}{_value(value)}}}, "path": "", '
                       f'"where": {_string(f"{where_head}{value})")}{ends[1]}')
        return out
    for head, values, path, where in zip(batch.heads, batch.values, batch.path_list(), batch.wheres(), strict=True):
        ends = parts.get(head) or ends_of(head)
        fields = ", ".join(name + _value(value) for name, value in zip(names, values, strict=True))
        append(f'{ends[0]}{fields}}}, "path": {_string(path)}, "where": {_string(where)}{ends[1]}')
    return out


def csv_lines(batch: SecretRows) -> str:
    """The secrets as ``csv.writer(lineterminator="\\n").writerows`` writes them, several times faster."""
    action = _csv_cell(batch.action)
    parts: dict[SecretHead, tuple[str, str] | None] = {}  # a head's cells: before the where, after it
    lines = []
    for head, where in zip(batch.heads, batch.wheres(), strict=True):
        if head in parts:
            ends = parts[head]
        else:
            cells = (_csv_cell(head[0]), _csv_cell(head[1]), action, _csv_cell(head[4]))
            ends = parts[head] = None if None in cells else (f"{cells[0]},{cells[1]},", f",{cells[2]},{cells[3]}\n")
        where_cell = _csv_cell(where)
        if ends is None or where_cell is None:
            lines.append(csv_row((head[0], head[1], where, batch.action, head[4])))
        else:
            lines.append(f"{ends[0]}{where_cell}{ends[1]}")
    return "".join(lines)


def _csv_cell(text: str) -> str | None:
    """A field as :func:`csv_row` writes it, when that is certain: as is, or quoted for its commas. None: ask csv."""
    text = csv_cell(text)
    if not text or "\"" in text:  # printable() left no line break in it
        return None
    return f'"{text}"' if "," in text else text


def csv_row(cells: tuple[str, ...]) -> str:
    """One CSV line (QUOTE_MINIMAL), each cell safe for a terminal and a spreadsheet: usernames, table names and
    file names come from the database and the disk, and may hold escape sequences or start a formula."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([csv_cell(cell) for cell in cells])
    return out.getvalue()


def _value(value: object) -> str:
    """One value as the JSON encoder writes it (``default=str`` for what JSON has no type for)."""
    if value.__class__ is int:
        return int.__repr__(value)
    if value.__class__ is str:
        return _string(value)
    if value is None:
        return "null"
    return ENCODE(value)
