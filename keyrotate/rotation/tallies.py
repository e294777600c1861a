"""Counting what a scan finds: per-location tallies and failures by row id."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyrotate.rotation.batches import NOT_OPENED, BatchResult

FAILURE_DETAIL_LIMIT = 200  # failures listed one by one; beyond that only counted


@dataclass
class FailedValue:
    """A value that opens under none of the keys. Holds a row id, never the value."""

    table: str
    column: str
    rowid: int
    path: str
    reason: str


@dataclass
class Tally:
    """Running counts for one target (or one catalogued location)."""

    label: str
    table: str
    column: str
    catalogued: bool  # really "blocking": its unopened values fail the run (see ``outside`` for the catalogue)
    opened_by: list[int]
    plaintext: int = 0
    empty: int = 0
    unopened: int = 0  # catalogued: blocks a rotation; discovery: a look-alike, left alone
    rewritten: int = 0
    encrypted_plaintext: int = 0
    encryptable_plaintext: int = 0
    failures: list[FailedValue] = field(default_factory=list)
    outside: bool = False  # a blocking count of tokens found outside the catalogue (:meth:`Tallies.unopenable`)

    def fail(self, failure: FailedValue) -> None:
        self.unopened += 1
        if len(self.failures) < FAILURE_DETAIL_LIMIT:
            self.failures.append(failure)

    def add_batch(self, result: BatchResult) -> None:
        """A whole-value batch's counts; its unopened rows become failures."""
        for index, count in enumerate(result.opened_by):
            self.opened_by[index] += count
        self.plaintext += result.plaintext
        self.encryptable_plaintext += result.encryptable_plaintext
        self.encrypted_plaintext += result.encrypted_plaintext
        self.rewritten += result.rewritten
        for rowid in result.unopened:
            self.fail(FailedValue(self.table, self.column, rowid, "", NOT_OPENED))


class Tallies(dict[str, Tally]):
    """Tallies by label, made on first use, every one with a counter per key."""

    def __init__(self, keys: int) -> None:
        super().__init__()
        self._keys = keys

    def of(self, label: str, table: str, column: str, catalogued: bool, *, outside: bool = False) -> Tally:
        tally = self.get(label)
        if tally is None:
            tally = self[label] = Tally(label, table, column, catalogued, [0] * self._keys, outside=outside)
        return tally

    def outside(self, table: str, column: str) -> Tally:
        """Tokens outside the catalogue, and look-alikes left alone: they never block a rotation."""
        return self.of(outside_label(table, column), table, column, False)

    def unopenable(self, table: str, column: str, why: str = "opens under no key") -> Tally:
        """Where tokens outside the catalogue that cannot be left as they are get counted.

        Counted like catalogued ones: they block a rotation (exit 8) and fail verify like a catalogued secret, but
        are reported as outside the catalogue (not in its totals).
        """
        return self.of(f"{table}.{column} (outside the catalogue, {why})", table, column, True, outside=True)


def outside_label(table: str, column: str) -> str:
    return f"{table}.{column} (outside the catalogue)"
