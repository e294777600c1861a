"""The keyed digest of one batch of stored texts: what the pass (in a crypto worker or not) and the proof both compute."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

MODULUS = 2**256


def batch_digest(key: bytes, name: bytes, rowids: Sequence[int], values: Sequence[Any]) -> int:
    """Keyed BLAKE2b of a batch's row ids and stored texts, in rowid order, as an integer.

    ``name`` says where the batch lives (label and column). Counts and lengths go
    in first, so every split of the joined text is unambiguous; a number or blob
    where TREK expects text is tagged, so 5 and "5" differ.
    """
    stream = blake2b(key=key, digest_size=32, person=b"keyrotate-stored")
    try:
        text = "".join(values)
        kinds = b"T"  # every value is text, the common case
    except TypeError:
        kinds = b"M" + bytes(value.__class__ is not str for value in values)
        values = [value if value.__class__ is str else repr(value) for value in values]
        text = "".join(values)
    stream.update(b"%d:%d:%s" % (len(rowids), len(name), name))
    stream.update(kinds)
    stream.update(array("q", rowids).tobytes())
    stream.update(array("q", map(len, values)).tobytes())
    stream.update(text.encode("utf-8", "surrogatepass"))
    return int.from_bytes(stream.digest(), "big")


def cells_digest(key: bytes, name: bytes, values: Sequence[Any]) -> int:
    """Each cell's keyed digest of (``name``, type tag, stored text), no rowid, added up (mod 2**256):
    a multiset of the stored texts, for tables whose rowids a VACUUM may renumber."""
    head = blake2b(key=key, digest_size=32, person=b"keyrotate-cell")
    head.update(b"%d:%s" % (len(name), name))
    total = 0
    for value in values:
        stream = head.copy()
        if value.__class__ is str:
            stream.update(b"T" + value.encode("utf-8", "surrogatepass"))
        else:  # a number or blob where TREK expects text: tagged, so 5 and "5" differ
            stream.update(b"R" + repr(value).encode("utf-8", "surrogatepass"))
        total += int.from_bytes(stream.digest(), "big")
    return total % MODULUS


def digest_name(label: str, column: str) -> bytes:
    return f"{label}\x00{column}".encode("utf-8", "surrogatepass")


def texts_after(rows: Sequence[tuple[Any, ...]], updates: Sequence[tuple[str, int]]) -> list[Any]:
    """The text each row of ``rows`` (``(rowid, value, ...)``) holds once ``updates`` (``(new text, rowid)``) are written."""
    if not updates:
        return [row[1] for row in rows]
    if len(updates) == len(rows) and [rowid for _, rowid in updates] == [row[0] for row in rows]:
        return [text for text, _ in updates]  # every row rewritten: a rotation's common case
    new = {rowid: text for text, rowid in updates}
    return [new.get(row[0], row[1]) for row in rows]


def digest_texts(key: bytes, name: bytes, loose: bool, rowids: list[int], values: Sequence[Any]) -> int:
    """:func:`cells_digest` for a ``loose`` location, else :func:`batch_digest`."""
    return cells_digest(key, name, values) if loose else batch_digest(key, name, rowids, values)
