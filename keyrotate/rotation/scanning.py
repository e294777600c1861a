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
from collections.abc import Callable, Collection, Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import cast

from keyrotate.rotation.batches import BatchResult, BatchSpec
from keyrotate.rotation.discovery import DiscoverySearch
from keyrotate.rotation.feeding import Feeder
from keyrotate.rotation.json_values import load_plugin_fields
from keyrotate.rotation.reading import (
    Batch,
    RangeWriter,
    count_empty_values,
    count_rows,
    read_batches,
    write_values,
)
from keyrotate.rotation.stored import StoredDigest
from keyrotate.rotation.tallies import Tallies, Tally
from keyrotate.rotation.targets import DiscoveryTarget, LocationTarget, Target, plan_targets
from keyrotate.rotation.unrewritable import unrewritable_cells, unrewritable_failures
from keyrotate.rotation.values import Rewrite, TokenCallback, ValueHandler
from keyrotate.rotation.workers import CryptoPool
from keyrotate.trek.catalogue import ResolvedLocation
from keyrotate.trek.formats import Keyring
from keyrotate.trek.schema import DatabaseInfo

ProgressCallback = Callable[[str, str, int, int | None], None]  # phase, label, advanced, total


class Scanner:
    """Walks every target of a database with one keyring.

    Whole-value batches go to ``pool`` when one is given (:class:`~keyrotate.rotation.feeding.Feeder`): they
    are read here (or, see :meth:`read_elsewhere`, by the worker that takes them), handed to the pool a few
    at a time, and their updates written here as their results come back.
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
        self._feeder = Feeder(conn, pool, self._batch_keyring, self._merge)
        self._read_path: str | None = None  # see read_elsewhere()
        self._range_writer: RangeWriter | None = None
        self._targets: list[Target] | None = None

    def targets(self) -> list[Target]:
        """What this scan walks, planned once (the catalogue crossed with the schema)."""
        if self._targets is None:
            self._targets = plan_targets(self.info, self.resolved, self._discovery_tables)
        return self._targets

    def run(self, phase: str, progress: ProgressCallback | None = None) -> dict[str, Tally]:
        """Walk every target once, ``phase`` naming it to ``progress``; the tallies (also :attr:`tallies`)."""
        try:
            for unit in self._walk():
                if isinstance(unit, tuple):
                    self._run_together(unit, phase, progress)
                else:
                    self.run_target(unit, phase, progress)
            self._feeder.collect(wait=True)
            if self._count_empty_values:
                self._add_empties()
            self._check_unrewritable()
        finally:
            self._feeder.drop()
            if self._discovery_search is not None:  # done, or cut short: its connection is closed either way
                self._discovery_search.stop()
            if self._read_path is not None and self._pool is not None:
                self._pool.release_reads()
        return self.tallies

    def run_target(self, target: Target, phase: str, progress: ProgressCallback | None) -> None:
        advanced = self._start(phase, target.label, (target,), progress)
        for batch in self._batches(target):
            self._process(target, batch)
            advanced(len(batch))

    def _walk(self) -> Iterator[Target | tuple[LocationTarget, ...]]:
        """The targets in order; while the workers read their own batches (:meth:`read_elsewhere`), each
        table's whole-value locations (one after the other in the catalogue) as one unit, walked side by side."""
        if self._pool is None or self._read_path is None:
            yield from self.targets()
            return
        for table, targets in groupby(self.targets(), lambda t: t.table if isinstance(t, LocationTarget)
                                      and not t.json else None):
            if table is None:
                yield from targets
            else:
                yield tuple(cast("Iterator[LocationTarget]", targets))

    def _run_together(self, targets: tuple[LocationTarget, ...], phase: str, progress: ProgressCallback | None) -> None:
        assert self._read_path is not None  # see _walk
        label = targets[0].label if len(targets) == 1 else f"{targets[0].table} ({len(targets)} locations)"
        self._feeder.hand_out(self._read_path, [(t, self._batch_spec(t)) for t in targets],
                              self._start(phase, label, targets, progress))

    def _start(self, phase: str, label: str, targets: Sequence[Target],
               progress: ProgressCallback | None) -> Callable[[int], None]:
        """Open the targets' tallies (the report lists locations in target order) and progress under ``label``."""
        for target in targets:
            if isinstance(target, LocationTarget) and not target.json and self._count_empty_values:
                loc = target.location
                self.tallies.of(loc.label, loc.table, loc.column, True)
        if progress is None:
            return lambda size: None
        total = sum(count_rows(self.conn, target) for target in targets)
        progress(phase, label, 0, total)
        return lambda size: progress(phase, label, size, total)

    def search_in_background(self, path: Path, twin: sqlite3.Connection | None = None) -> None:
        """Find the rows holding stray tokens on another connection while this scanner does the rest.

        Only sound where :class:`DiscoverySearch` says so: on a ``twin`` in this scanner's snapshot, or
        a WAL database under this scanner's write lock.
        """
        self._discovery_search = DiscoverySearch(path, self.targets(), self.info, twin, self._discovery_tables)

    def read_elsewhere(self, path: Path) -> None:
        """Read on connections of their own what need not be read on this one: the whole-table scans
        (:meth:`search_in_background`) and, by the crypto workers, the whole-value batches they are handed
        (this process finds only where each ends). Only sound where :class:`~keyrotate.rotation.batches.RowRange`
        and :class:`DiscoverySearch` say so: a WAL database under this scanner's write lock."""
        self.search_in_background(path)
        if self._pool is not None:
            self._read_path = str(path)

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
            self._feeder.submit(target, self._batch_spec(target), batch)

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
        """``enc:v1:`` where discovery cannot rewrite it (:func:`unrewritable_failures`): never left silently."""
        search = self._discovery_search
        listed = search.unrewritable() if search is not None else None
        cells = listed if listed is not None else unrewritable_cells(self.conn, self.info, self._discovery_tables)
        for failure in unrewritable_failures(cells, self.keyring, self._settled):
            self.tallies.unopenable(failure.table, failure.column, "cannot be rewritten").fail(failure)

