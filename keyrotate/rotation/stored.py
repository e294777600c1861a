"""Keyed digests of the exact texts a rotation leaves in each secret location, so the post-commit check decrypts nothing."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from os import urandom
from typing import Any

from keyrotate.rotation.targets import plan_targets
from keyrotate.rotation.text_digest import MODULUS, digest_name, digest_texts, texts_after
from keyrotate.trek.catalogue import ResolvedLocation
from keyrotate.trek.schema import DatabaseInfo

Batch = Sequence[tuple[Any, ...]]  # (rowid, value, ...) or, for discovery, (rowid, *cells)


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
        values = texts_after(batch, updates)
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
        self.add_digest(label, digest_texts(self.key, digest_name(label, column), label in self.loose, rowids, values),
                        len(rowids))

    def add_digest(self, label: str, digest: int, cells: int) -> None:
        """A batch's digest made elsewhere (by :func:`~keyrotate.rotation.batches.process_batch`, maybe in a worker)."""
        self._sums[label] = (self._sums.get(label, 0) + digest) % MODULUS
        self.cells[label] = self.cells.get(label, 0) + cells

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
