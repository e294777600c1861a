"""The batches in flight between a scan and its crypto pool: handed to a worker or done here, results taken back in order."""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keyrotate.rotation.batches import BatchResult, BatchSpec, RowRange, process_batch
from keyrotate.rotation.reading import Batch, BatchReads
from keyrotate.rotation.targets import LocationTarget
from keyrotate.rotation.workers import CryptoPool, PendingBatch
from keyrotate.trek.formats import Keyring

Merge = Callable[[LocationTarget, int, BatchResult], None]  # target, rows in the batch, its result


@dataclass
class _Walk:
    """One location's way through its batches: what cuts them, what to do with them, the last rowid handed out."""

    target: LocationTarget
    reads: BatchReads
    spec: BatchSpec
    last: int = -(2**63)


class Feeder:
    """Whole-value batches for the crypto pool (when there is one), and their results for ``merge``.

    A batch goes to a worker with room, or is done here while the workers are busy; results are taken off
    the workers' pipes in the order handed out (each worker answers in order). ``keyring`` is the pool's
    when there is one: a batch's spec names its keys by their place in it.
    """

    def __init__(self, conn: sqlite3.Connection, pool: CryptoPool | None, keyring: Keyring, merge: Merge) -> None:
        self._conn = conn
        self._pool = pool
        self._keyring = keyring
        self._merge = merge
        self._pending: deque[tuple[LocationTarget, int, PendingBatch]] = deque()  # target, rows, result
        self._received: deque[tuple[LocationTarget, int, BatchResult]] = deque()  # back from a worker, not merged

    def submit(self, target: LocationTarget, spec: BatchSpec, batch: Batch) -> None:
        """Hand the batch to a worker with room for it, or do it here while the workers are busy."""
        if self._pool is not None:
            self.collect(wait=False)
            handed = self._pool.try_submit(spec, batch)
            if handed is not None:
                self._pending.append((target, len(batch), handed))
                return
        self._merge(target, len(batch), process_batch(self._keyring, spec, batch))

    def hand_out(self, path: str, targets: Sequence[tuple[LocationTarget, BatchSpec]],
                 advanced: Callable[[int], None]) -> None:
        """Whole-value locations' batches (as :func:`~keyrotate.rotation.reading.read_batches` cuts them), each
        read by a worker when one has room (a :class:`RowRange` of the database at ``path``), else read and done
        here. Feeding the workers comes before merging what they sent back (a batch of a wide table such as
        users takes longer to write than to re-encrypt), and both before a batch done here: the worker sat idle
        at the end of each users location (0.15 s of a 1.1 s pass). The locations of one table go side by side,
        the one furthest behind in rowid first, so the pages a batch writes are still cached when the next
        location's batch writes the same rows: a rotation at 370,000 secrets took 0.95x the time it took
        location after location, 11 alternating runs (the users table's ten columns; perf_experiments h)."""
        pool = self._pool
        assert pool is not None, "only for a feeder with a pool"
        walks = [_Walk(target, BatchReads(target), spec) for target, spec in targets]
        while walks:
            walk = min(walks, key=lambda w: w.last)
            self._receive(wait=False)
            if pool.has_room():
                end, rows = walk.reads.span(self._conn, walk.last)
                if not rows:
                    walks.remove(walk)
                    continue
                between = walk.reads.between(walk.last + 1, end)  # no row of the batch lies between last and its first
                handed = pool.try_submit(walk.spec, RowRange(path, between.text, between.params, rows))
                if handed is not None:
                    self._pending.append((walk.target, rows, handed))
                    walk.last = end
                    advanced(rows)
                    continue
            if self._received:
                self._merge(*self._received.popleft())
                continue
            batch = walk.reads.rows(self._conn, walk.last)
            if not batch:
                walks.remove(walk)
                continue
            self._merge(walk.target, len(batch), process_batch(self._keyring, walk.spec, batch))
            walk.last = batch[-1][0]
            advanced(len(batch))

    def collect(self, *, wait: bool) -> None:
        """Merge worker results, oldest first: those received already, then the finished ones (all when ``wait``)."""
        self._receive(wait=wait)
        while self._received:
            self._merge(*self._received.popleft())

    def drop(self) -> None:
        """Forget what is in flight (a pass that ends early: nothing of it will be written)."""
        self._pending.clear()
        self._received.clear()

    def _receive(self, *, wait: bool) -> None:
        """Results off the workers' pipes, in the order handed out: frees places."""
        pending = self._pending
        while pending and (wait or pending[0][2].ready()):
            target, rows, handle = pending.popleft()
            self._received.append((target, rows, handle.get()))
