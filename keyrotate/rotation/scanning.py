"""The one scan every command drives: walk the targets, classify each value, rewrite what must change, count it all.

Targets (:mod:`~keyrotate.rotation.targets`) are read in rowid order in bounded
batches (:mod:`~keyrotate.rotation.reading`), so memory stays flat however large
the table is. Whole values go through :func:`~keyrotate.rotation.batches.process_batch`
(on the crypto pool when there is one); JSON fields and stray tokens through
:class:`~keyrotate.rotation.values.ValueHandler`. What a pass does with each value
is set by its arguments: classify only (verify, audit), report each token
(exposure), re-encrypt and digest the stored texts (rotate, dry run). The post-commit check reads the
same targets back without a scanner (:mod:`~keyrotate.rotation.after_commit`).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

from keyrotate.rotation.batches import BatchResult, BatchSpec, RowRange, process_batch
from keyrotate.rotation.discovery import DiscoverySearch
from keyrotate.rotation.json_values import load_plugin_fields
from keyrotate.rotation.reading import (
    Batch,
    BatchReads,
    RangeWriter,
    count_empty_values,
    count_rows,
    read_batches,
    write_values,
)
from keyrotate.rotation.stored import StoredDigest
from keyrotate.rotation.tallies import FailedValue, Tallies, Tally
from keyrotate.rotation.targets import DiscoveryTarget, LocationTarget, Target, plan_targets
from keyrotate.rotation.unrewritable import unrewritable_cells
from keyrotate.rotation.values import Rewrite, TokenCallback, ValueHandler
from keyrotate.rotation.workers import CryptoPool, PendingBatch
from keyrotate.trek.catalogue import ResolvedLocation
from keyrotate.trek.formats import EMBEDDED_TOKEN, UNOPENED, Keyring, Scheme, is_well_formed_token
from keyrotate.trek.schema import DatabaseInfo

ProgressCallback = Callable[[str, str, int, int | None], None]  # phase, label, advanced, total


class Scanner:
    """Walks every target of a database with one keyring.

    Whole-value batches go to ``pool`` when one is given: they are read here (or,
    see :meth:`read_elsewhere`, by the worker that takes them), handed to the pool
    a few at a time and their updates written here, in the order they were read.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        info: DatabaseInfo,
        resolved: Sequence[ResolvedLocation],
        keyring: Keyring,
        *,
        stored: StoredDigest | None = None,
        rewrite: Rewrite | None = None,
        on_token: TokenCallback | None = None,
        pool: CryptoPool | None = None,
        before_first_write: Callable[[], None] | None = None,
        discovery_tables: Collection[str] | None = None,
        count_empty: bool = True,
        settled_key: int | None = None,
    ) -> None:
        self.conn = conn
        self.info = info
        self.resolved = resolved
        self.keyring = keyring
        self.stored = stored
        self.rewrite = rewrite
        self.on_token = on_token
        self.tallies = Tallies(len(keyring))
        self._values = ValueHandler(keyring, self.tallies, rewrite=rewrite,
                                    on_token=on_token, plugin_fields=load_plugin_fields(conn, info.schema))
        self._pool = pool
        self._before_first_write = before_first_write
        self._discovery_tables = discovery_tables  # None: look for stray tokens in every table
        self._discovery_search: DiscoverySearch | None = None  # see search_in_background()
        self._count_empty_values = count_empty
        # The key values should be under once this pass is done: the new key when rotating, else the first.
        self._settled = settled_key if settled_key is not None else rewrite.new_index if rewrite is not None else 0
        # The pool's keyring when there is one: a batch names its keys by their place in it.
        self._batch_keyring = pool.keyring if pool is not None else keyring
        self._key_order = tuple(self._batch_keyring.index_of(key) for key in keyring.keys)
        self._pending: deque[tuple[LocationTarget, int, PendingBatch]] = deque()  # target, rows, result
        self._received: deque[tuple[LocationTarget, int, BatchResult]] = deque()  # back from a worker, not merged
        self._read_path: str | None = None  # see read_elsewhere()
        self._range_writer: RangeWriter | None = None
        self._targets: list[Target] | None = None

    def targets(self) -> list[Target]:
        """What this scan walks, planned once (the catalogue crossed with the schema)."""
        if self._targets is None:
            self._targets = plan_targets(self.info, self.resolved, self._discovery_tables)
        return self._targets

    def run(self, phase: str, progress: ProgressCallback | None = None) -> dict[str, Tally]:
        try:
            for target in self.targets():
                self.run_target(target, phase, progress)
            self._collect(wait=True)
            if self._count_empty_values:
                self._add_empties()
            self._check_unrewritable()
        finally:
            self._pending.clear()
            self._received.clear()
            if self._discovery_search is not None:  # done, or cut short: its connection is closed either way
                self._discovery_search.stop()
            if self._read_path is not None and self._pool is not None:
                self._pool.release_reads()
        return self.tallies

    def run_target(self, target: Target, phase: str, progress: ProgressCallback | None) -> None:
        if isinstance(target, LocationTarget) and not target.json and self._count_empty_values:
            loc = target.location
            self.tallies.of(loc.label, loc.table, loc.column, True)  # the report lists locations in target order
        total = count_rows(self.conn, target) if progress else None
        if progress:
            progress(phase, target.label, 0, total)

        def advanced(size: int) -> None:
            if progress:
                progress(phase, target.label, size, total)

        if isinstance(target, LocationTarget) and not target.json and self._pool and self._read_path:
            self._hand_out(self._pool, self._read_path, target, advanced)
            return
        for batch in self._batches(target):
            self._process(target, batch)
            advanced(len(batch))

    def search_in_background(self, path: Path, twin: sqlite3.Connection | None = None) -> None:
        """Find the rows holding stray tokens on another connection while this scanner does the rest.

        Only sound where :class:`DiscoverySearch` says so: on a ``twin`` in this scanner's snapshot, or
        a WAL database under this scanner's write lock.
        """
        self._discovery_search = DiscoverySearch(path, self.targets(), twin, self.info, self._discovery_tables)

    def read_elsewhere(self, path: Path) -> None:
        """Read on connections of their own what need not be read on this one: the whole-table scans
        (:meth:`search_in_background`) and, by the crypto workers, the whole-value batches they are handed
        (this process finds only where each ends). Only sound where :class:`~keyrotate.rotation.batches.RowRange`
        and :class:`DiscoverySearch` say so: a WAL database under this scanner's write lock."""
        self.search_in_background(path)
        if self._pool is not None:
            self._read_path = str(path)

    def _hand_out(self, pool: CryptoPool, path: str, target: LocationTarget, advanced: Callable[[int], None]) -> None:
        """A whole-value location's batches (as :func:`read_batches` cuts them), each read by a worker when
        one has room, else read and done here. Feeding the workers comes before writing what they sent back
        (a batch of a wide table such as users takes longer to write than to re-encrypt), and both before a
        batch done here: the worker sat idle at the end of each users location (0.15 s of a 1.1 s pass)."""
        reads, spec = BatchReads(target), self._batch_spec(target)
        last = -(2**63)
        while True:
            self._receive(wait=False)
            if pool.has_room():
                end, rows = reads.span(self.conn, last)
                if not rows:
                    return
                between = reads.between(last + 1, end)  # no row of the batch lies between last and its first
                handed = pool.try_submit(spec, RowRange(path, between.text, between.params, rows))
                if handed is not None:
                    self._pending.append((target, rows, handed))
                    last = end
                    advanced(rows)
                    continue
            if self._received:
                self._merge(*self._received.popleft())
                continue
            batch = reads.rows(self.conn, last)
            if not batch:
                return
            self._merge(target, len(batch), process_batch(self._batch_keyring, spec, batch))
            last = batch[-1][0]
            advanced(len(batch))

    def _batches(self, target: Target) -> Iterator[Batch]:
        search = self._discovery_search
        rowids = search.rowids(target.table) if search is not None and isinstance(target, DiscoveryTarget) else None
        return read_batches(self.conn, target, rowids)

    def _process(self, target: Target, batch: Batch) -> None:
        if isinstance(target, DiscoveryTarget):
            updates = self._values.discovery_batch(target, batch)
            if self.stored is not None:
                self.stored.add_cells(target.label, target.columns, batch, updates)
            by_column: dict[str, list[tuple[str, int]]] = {}
            for new_text, rowid, column in updates:
                by_column.setdefault(column, []).append((new_text, rowid))
            for column, pairs in by_column.items():
                self._write(target.table, column, pairs)
        elif target.json:
            json_updates = self._values.json_batch(target, batch)
            if self.stored is not None:
                self.stored.add_values(target.label, batch, json_updates)
            self._write(target.table, target.location.column, json_updates)
        else:
            self._submit(target, batch)

    def _batch_spec(self, target: LocationTarget) -> BatchSpec:
        loc, rw = target.location, self.rewrite
        return BatchSpec(
            loc.label, loc.table, loc.column, loc.scheme, self._key_order,
            new_index=rw.new_index if rw is not None else None,
            encrypt_plaintext=rw.encrypt_plaintext if rw is not None else False,
            report_tokens=self.on_token is not None,
            digest_key=self.stored.key if self.stored is not None else None,
            digest_loose=self.stored is not None and loc.label in self.stored.loose,
        )

    def _submit(self, target: LocationTarget, batch: Batch) -> None:
        """Hand the batch to an idle worker, or do it here while the workers are busy."""
        spec = self._batch_spec(target)
        if self._pool is not None:
            self._collect(wait=False)
            handed = self._pool.try_submit(spec, batch)
            if handed is not None:
                self._pending.append((target, len(batch), handed))
                return
        self._merge(target, len(batch), process_batch(self._batch_keyring, spec, batch))

    def _collect(self, *, wait: bool) -> None:
        """Merge worker results, oldest first: those received already, then the finished ones (all when ``wait``)."""
        self._receive(wait=wait)
        while self._received:
            self._merge(*self._received.popleft())

    def _receive(self, *, wait: bool) -> None:
        """Results off the workers' pipes, in the order handed out (each worker answers in order): frees places."""
        pending = self._pending
        while pending and (wait or pending[0][2].ready()):
            target, rows, handle = pending.popleft()
            self._received.append((target, rows, handle.get()))

    def _merge(self, target: LocationTarget, rows: int, result: BatchResult) -> None:
        loc = target.location
        self.tallies.of(loc.label, loc.table, loc.column, True).add_batch(result)
        if self.on_token is not None:
            for rowid, index in result.tokens:
                self.on_token(loc.label, loc.table, loc.column, rowid, "", None if index < 0 else index)
        if self.stored is not None and result.digest is not None:  # of exactly the texts written next
            self.stored.add_digest(loc.label, result.digest, rows)
        if result.updates and len(result.updates) == rows:  # every row of the batch rewritten: the common case
            self._before_writing()
            if self._range_writer is None:
                self._range_writer = RangeWriter(self.conn)
            self._range_writer.write(target, result.updates)
        else:
            self._write(loc.table, loc.column, result.updates)

    def _write(self, table: str, column: str, updates: Sequence[tuple[str, int]]) -> None:
        if not updates:
            return
        self._before_writing()
        write_values(self.conn, table, column, updates)

    def _before_writing(self) -> None:
        if self._before_first_write is not None:
            before, self._before_first_write = self._before_first_write, None
            before()

    def _add_empties(self) -> None:
        """NULL and '' both mean "not set" to TREK: counted once the pass is done, never fetched (by the
        background search when there is one). The pass only rewrites values that are set, so the counts
        are those of the database as the pass found it."""
        located = [t for t in self.targets() if isinstance(t, LocationTarget) and not t.json]
        search = self._discovery_search
        empties = search.empties() if search is not None else None
        if empties is None:
            empties = count_empty_values(self.conn, located)
        for target in located:
            loc = target.location
            self.tallies.of(loc.label, loc.table, loc.column, True).empty += empties.get(loc.label, 0)

    def _check_unrewritable(self) -> None:
        """``enc:v1:`` where discovery cannot rewrite it: WITHOUT ROWID tables and BLOB values.

        A token there under the settled key is fine. One under another key, or well formed and opening
        under none, is a failure that blocks the rotation and fails verify: never left silently.
        """
        read = self.keyring.reader(Scheme.API)
        search = self._discovery_search
        cells = search.unrewritable() if search is not None else None
        for cell in cells if cells is not None else unrewritable_cells(self.conn, self.info, self._discovery_tables):
            for match in EMBEDDED_TOKEN.finditer(cell.text):
                index, _ = read(match.group())
                if index == self._settled:
                    continue
                if index == UNOPENED and not is_well_formed_token(match.group()):
                    continue  # a note that mentions enc:v1:
                state = ("opens under none of the keys" if index == UNOPENED
                         else "opens under another key than it must end under")
                self.tallies.unopenable(cell.table, cell.column, "cannot be rewritten").fail(FailedValue(
                    cell.table, cell.column, cell.rowid, f"{cell.where}@{match.start()}",
                    f"a TREK ciphertext {cell.why}; it {state}"))
