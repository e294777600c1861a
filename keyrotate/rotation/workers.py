"""Worker processes for the crypto, so a rotation uses more than one core.

The crypto is CPU-bound; SQLite I/O is not shared: the calling process reads
every batch, hands it to a worker (or does it itself while the workers are
busy) and writes the results through its one connection, in its one
transaction. Keys reach the workers as the arguments of the forked process
(inherited memory on Linux, the process's pipe elsewhere), never through argv,
the environment or a file.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from keyrotate.errors import KeyrotateError
from keyrotate.rotation.batches import BatchResult, BatchSpec, Row, process_batch
from keyrotate.trek.formats import Keyring
from keyrotate.trek.keys import Key


def _pack_rows(rows: list[Row]) -> tuple[list[int], str] | list[Row]:
    """Rows for a worker: row ids and one NUL-joined string when every value is text without NUL."""
    values = [row[1] for row in rows]
    try:
        joined = "\x00".join(values)
    except TypeError:  # a number or blob among them
        return rows
    if joined.count("\x00") != len(values) - 1:
        return rows
    return [row[0] for row in rows], joined


def _unpack_rows(packed: tuple[list[int], str] | list[Row]) -> list[Row]:
    if isinstance(packed, list):
        return packed
    rowids, joined = packed
    return list(zip(rowids, joined.split("\x00"), strict=True))


# A worker holds the batch it is working on plus, when it fits in the pipe's buffer, the next one.
# A second batch is only sent when the kernel can take all of it at once: the sender then never
# blocks, so the two sides can never both be stuck sending to each other.
BATCHES_PER_WORKER = 2


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when the process that forked it dies, even by SIGKILL."""
    if sys.platform != "linux":
        return
    with suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _serve(keys: tuple[Key, ...], conn: Connection, parent: int, inherited: tuple[int, ...]) -> None:
    """A worker's loop: batches in, results out, until told to stop or the parent is gone."""
    # Interrupts are the parent's to handle: it rolls back (or finishes after a commit) and stops the workers.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent(parent)
    # A forked worker inherits the parent's end of every pipe (its own and earlier workers'). Holding one
    # keeps that pipe open after the parent dies: this worker would never see EOF and live on with the keys.
    for fd in inherited:
        with suppress(OSError):
            os.close(fd)
    # Nor may it hold the parent's stdout: `keyrotate ... | cat` ends only when every writer is gone.
    with suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
    keyring = Keyring(keys)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        spec, packed = message
        try:
            reply: tuple[bool, Any] = (True, process_batch(keyring, spec, _unpack_rows(packed)))
        except KeyrotateError as exc:  # messages name rows, never values
            reply = (False, exc)
        except Exception as exc:  # noqa: BLE001 - anything else is a bug; its type is enough
            reply = (False, KeyrotateError(f"A crypto worker failed ({type(exc).__name__}); nothing was committed."))
        try:
            conn.send(reply)
        except OSError:  # the parent closed its end: it is stopping or gone
            return


class _Worker:
    def __init__(self, process: BaseProcess, conn: Connection, send_room: int) -> None:
        self.process = process
        self.conn = conn
        self.send_room = send_room  # bytes the pipe surely takes without waiting for the worker
        self.outstanding = 0


class PendingBatch:
    """A batch handed to a worker; :meth:`get` waits for its result."""

    __slots__ = ("_worker",)

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    def ready(self) -> bool:
        return self._worker.conn.poll()

    def get(self) -> BatchResult:
        worker = self._worker
        try:
            ok, payload = worker.conn.recv()
        except (EOFError, OSError):
            raise KeyrotateError("A crypto worker process stopped unexpectedly; nothing was committed.") from None
        worker.outstanding -= 1
        if not ok:
            raise payload
        return payload  # type: ignore[no-any-return]


PIPE_BUFFER_BYTES = 4 * 1024 * 1024


def _pipe() -> tuple[Connection, Connection, int]:
    """A duplex pipe whose buffers hold a whole batch, so neither side waits for the other to read.

    Returns both ends and how many bytes a send surely fits without blocking: a
    quarter of what the kernel granted (it may grant less than asked, and counts
    its own bookkeeping against the buffer).
    """
    ends = socket.socketpair()
    for end in ends:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, option, PIPE_BUFFER_BYTES)
    granted = min(ends[0].getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                  ends[1].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return Connection(ends[0].detach()), Connection(ends[1].detach()), granted // 4


class CryptoPool:
    """Worker processes that run :func:`process_batch` for one set of keys.

    The caller keeps working too: it hands a batch to a worker while one has
    room (:meth:`try_submit`) and processes the batch itself otherwise, so
    ``workers`` is best one less than the number of cores. Results come back
    over each worker's pipe in the order its batches went out; no helper
    threads. Create the pool before opening the database: the workers are
    forked at once, so they never inherit an open SQLite connection.
    """

    def __init__(self, keys: Sequence[Key], workers: int) -> None:
        self.keyring = Keyring(keys)
        self.workers = workers
        forking = sys.platform == "linux"
        ctx = multiprocessing.get_context("fork" if forking else None)
        self._workers: list[_Worker] = []
        try:
            for _ in range(workers):
                here, there, send_room = _pipe()
                # Parent ends a forked child inherits; a spawned child inherits none.
                inherited = tuple(c.fileno() for c in (here, *(w.conn for w in self._workers))) if forking else ()
                process = ctx.Process(target=_serve, args=(self.keyring.keys, there, os.getpid(), inherited),
                                      daemon=True)
                process.start()
                there.close()
                self._workers.append(_Worker(process, here, send_room))
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"CryptoPool({self.workers} workers)"

    def try_submit(self, spec: BatchSpec, rows: list[Row]) -> PendingBatch | None:
        """Hand the batch to a worker if one can take it now; None: the caller does it itself.

        An idle worker always takes it (it is reading, so the send completes). A
        busy one takes a second batch only if the whole message fits in its pipe.
        """
        worker = min(self._workers, key=lambda w: w.outstanding)
        if worker.outstanding >= BATCHES_PER_WORKER:
            return None
        message = pickle.dumps((spec, _pack_rows(rows)), pickle.HIGHEST_PROTOCOL)
        if worker.outstanding and len(message) > worker.send_room:
            return None
        try:
            worker.conn.send_bytes(message)
        except OSError:
            raise KeyrotateError("A crypto worker process stopped unexpectedly; nothing was committed.") from None
        worker.outstanding += 1
        return PendingBatch(worker)

    def close(self) -> None:
        for worker in self._workers:
            with suppress(OSError):
                worker.conn.send(None)
            worker.conn.close()  # a worker still sending a result gets an error and stops too
        for worker in self._workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()  # it ignores SIGTERM
                worker.process.join()
        self._workers = []

    def __enter__(self) -> CryptoPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PARALLEL_MIN_BYTES = 8 * 1024 * 1024  # below this a pool costs more than it saves


def worker_count(requested: int | None, database_bytes: int) -> int:
    """How many worker processes to use: ``requested``, or one less than the cores (at most 3)
    when the database is big enough to gain from them."""
    if requested is not None:
        return max(0, requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2 or database_bytes < PARALLEL_MIN_BYTES:
        return 0
    return min(cores - 1, 3)


@contextmanager
def crypto_pool(db_path: Path, keys: Sequence[Key], requested: int | None) -> Iterator[CryptoPool | None]:
    """Worker processes for the crypto, or None when this machine or database gains nothing from them.

    Started before the database is opened, so the workers hold no connection.
    """
    size = 0
    for path in (db_path, Path(f"{db_path}-wal")):
        with suppress(OSError):
            size += path.stat().st_size
    workers = worker_count(requested, size)
    if workers == 0:
        yield None
        return
    pool = CryptoPool(keys, workers)
    try:
        yield pool
    finally:
        pool.close()
