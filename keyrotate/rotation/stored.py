"""Keyed digests of the exact texts a rotation leaves in each secret location, so the post-commit check decrypts nothing."""

from __future__ import annotations

from array import array
from collections.abc import Collection, Sequence
from hashlib import blake2b
from os import urandom
from typing import Any

from keyrotate.rotation.targets import plan_targets
from keyrotate.trek.catalogue import ResolvedLocation
from keyrotate.trek.schema import DatabaseInfo

Batch = Sequence[tuple[Any, ...]]  # (rowid, value, ...) or, for discovery, (rowid, *cells)
_MODULUS = 2**256


class StoredDigest:
    """Per target label, keyed BLAKE2b digests of every cell's row id and stored text, one per batch.

    The rotation feeds it the text each cell holds once the transaction commits:
    the new ciphertext where one is written (checked before the write to open
    under the new key to the original plaintext), the value as read where it is
    left alone. The post-commit check feeds a second one from a fresh connection:
    equal digests mean the bytes on disk are the bytes that were checked. Keyed
    with a per-run random key, so a digest says nothing about the values.
    Both sides must read the same rowid batches (same targets, same
    :func:`~keyrotate.rotation.reading.read_batches`); each batch is digested
    in rowid order, and a location's batch digests are added up (mod 2**256),
    because worker results are merged in the order they finish, not the order
    they were read. The ``loose`` labels are in tables without an INTEGER
    PRIMARY KEY, whose rowids the VACUUM after the COMMIT may renumber (and so
    cut into other batches): there each cell is digested on its own, without
    its rowid, and the cell digests added up, a multiset of the stored texts.
    """

    def __init__(self, key: bytes | None = None, loose: Collection[str] = ()) -> None:
        self.key = key if key is not None else urandom(32)
        self.loose = frozenset(loose)
        self._sums: dict[str, int] = {}
        self.cells: dict[str, int] = {}

    def add_values(self, label: str, batch: Batch, updates: Sequence[tuple[str, int]]) -> None:
        """One whole-value or JSON batch, ``updates`` being the ``(new text, rowid)`` pairs written for it."""
        rowids = [row[0] for row in batch]
        if not updates:
            values = [row[1] for row in batch]
        elif len(updates) == len(rowids) and [rowid for _, rowid in updates] == rowids:
            values = [text for text, _ in updates]  # every row rewritten: a rotation's common case
        else:
            new = {rowid: text for text, rowid in updates}
            values = [new.get(row[0], row[1]) for row in batch]
        self._add(label, "", rowids, values)

    def add_cells(self, label: str, columns: Sequence[str], batch: Batch,
                  updates: Sequence[tuple[str, int, str]]) -> None:
        """One discovery batch: every cell the target selected (not NULL), ``updates`` as ``(new text, rowid, column)``."""
        new = {(rowid, column): text for text, rowid, column in updates}
        for place, column in enumerate(columns, 1):
            rows = [row for row in batch if row[place] is not None]
            if rows:
                self._add(label, column, [row[0] for row in rows],
                          [new.get((row[0], column), row[place]) for row in rows])

    def _add(self, label: str, column: str, rowids: list[int], values: list[Any]) -> None:
        name = f"{label}\x00{column}".encode("utf-8", "surrogatepass")
        if label in self.loose:
            self._add_cells_alone(label, name, values)
            return
        stream = blake2b(key=self.key, digest_size=32, person=b"keyrotate-stored")
        try:
            text = "".join(values)
            kinds = b"T"  # every value is text, the common case
        except TypeError:  # a number or blob where TREK expects text: tagged, so 5 and "5" differ
            kinds = b"M" + bytes(value.__class__ is not str for value in values)
            values = [value if value.__class__ is str else repr(value) for value in values]
            text = "".join(values)
        # Counts and lengths first, so every split of the joined text is unambiguous.
        stream.update(b"%d:%d:%s" % (len(rowids), len(name), name))
        stream.update(kinds)
        stream.update(array("q", rowids).tobytes())
        stream.update(array("q", map(len, values)).tobytes())
        stream.update(text.encode("utf-8", "surrogatepass"))
        self._sums[label] = (self._sums.get(label, 0) + int.from_bytes(stream.digest(), "big")) % _MODULUS
        self.cells[label] = self.cells.get(label, 0) + len(rowids)

    def _add_cells_alone(self, label: str, name: bytes, values: list[Any]) -> None:
        """Each cell's keyed digest of (label, column, type tag, stored text), no rowid, added up."""
        head = blake2b(key=self.key, digest_size=32, person=b"keyrotate-cell")
        head.update(b"%d:%s" % (len(name), name))
        total = self._sums.get(label, 0)
        for value in values:
            stream = head.copy()
            if value.__class__ is str:
                stream.update(b"T" + value.encode("utf-8", "surrogatepass"))
            else:  # a number or blob where TREK expects text: tagged, so 5 and "5" differ
                stream.update(b"R" + repr(value).encode("utf-8", "surrogatepass"))
            total += int.from_bytes(stream.digest(), "big")
        self._sums[label] = total % _MODULUS
        self.cells[label] = self.cells.get(label, 0) + len(values)

    def digests(self, labels: Collection[str]) -> dict[str, tuple[int, int]]:
        """(sum of batch digests, cells) per label in ``labels``."""
        return {label: (total, self.cells[label]) for label, total in self._sums.items() if label in labels}

    def count(self, labels: Collection[str]) -> int:
        return sum(n for label, n in self.cells.items() if label in labels)


def loose_labels(info: DatabaseInfo, resolved: Sequence[ResolvedLocation]) -> frozenset[str]:
    """The labels of all targets in tables whose rowids a VACUUM may renumber (no INTEGER PRIMARY KEY)."""
    return frozenset(target.label for target in plan_targets(info, resolved) if target.table not in info.rowid_alias)


def differing_labels(written: StoredDigest, read_back: StoredDigest, labels: Collection[str]) -> list[str]:
    """The locations whose stored texts are not the ones written (in ``labels``, sorted)."""
    ours, theirs = written.digests(labels), read_back.digests(labels)
    return sorted(label for label in {*ours, *theirs} if ours.get(label) != theirs.get(label))
