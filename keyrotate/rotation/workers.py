"""Worker processes for the crypto, so a rotation uses more than one core.

The crypto is CPU-bound; SQLite writes are not shared: the calling process
cuts every batch, hands it to a worker (or does it itself while the workers are
busy) and writes the results through its one connection, in its one
transaction. A worker reads a batch's rows itself when handed a
:class:`~keyrotate.rotation.batches.RowRange` instead of the rows. Each worker is a fresh, small interpreter
(:mod:`keyrotate.rotation.crypto_worker`), not a fork of this process; keys
reach it as the first message on its pipe, never through argv, the
environment or a file.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from pathlib import Path

import keyrotate
from keyrotate.errors import KeyrotateError
from keyrotate.interrupts import SIGNALS
from keyrotate.rotation.batches import RELEASE, BatchResult, BatchSpec, Packed, Row, RowRange
from keyrotate.rotation.crypto_worker import BOOTSTRAP
from keyrotate.trek.formats import Keyring
from keyrotate.trek.keys import Key


def _pack_rows(rows: list[Row] | RowRange) -> Packed:
    """Rows for a worker: row ids and one NUL-joined string when every value is text without NUL
    (a :class:`RowRange` as it is: the worker reads those rows itself)."""
    if isinstance(rows, RowRange):
        return rows
    values = [row[1] for row in rows]
    try:
        joined = "\x00".join(values)
    except TypeError:  # a number or blob among them
        return rows
    if joined.count("\x00") != len(values) - 1:
        return rows
    return [row[0] for row in rows], joined


# A worker holds the batch it is working on plus, when they fit in the pipe's buffer, the next two
# (so it is never idle while this process does a batch itself: measured at 370k, pass 2.2 s -> 1.9 s
# under load 1.8, the main process doing less of the crypto). A batch beyond the first is only sent
# when the kernel can take all of it at once (each at most a quarter of the buffer): the sender then
# never blocks, so the two sides can never both be stuck sending to each other.
BATCHES_PER_WORKER = 3


class _Worker:
    def __init__(self, process: subprocess.Popen[bytes], conn: Connection, send_room: int) -> None:
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


def _import_path() -> list[str]:
    """Where this process found keyrotate and its dependencies, for a worker started without site or environment."""
    here = str(Path(keyrotate.__file__).resolve().parent.parent)
    return [here, *(entry for entry in sys.path if entry and entry != here)]


def _start_worker(there: Connection) -> subprocess.Popen[bytes]:
    """A worker process on the far end of a pipe (:mod:`keyrotate.rotation.crypto_worker`).

    It starts with the interrupts blocked (a signal mask survives exec) and
    ignores them before unblocking them, so a Ctrl-C that arrives while it
    starts up is the parent's alone.
    """
    command = [sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(os.getpid()), str(there.fileno()), *_import_path()]
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                pass_fds=(there.fileno(),))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class CryptoPool:
    """Worker processes that run :func:`process_batch` for one set of keys.

    The caller keeps working too: it hands a batch to a worker while one has
    room (:meth:`try_submit`) and processes the batch itself otherwise, so
    ``workers`` is best one less than the number of cores. Results come back
    over each worker's pipe in the order its batches went out; no helper
    threads. Each worker is a new interpreter that inherits nothing but its
    end of the pipe (not this process's memory, files or SQLite connections).
    """

    def __init__(self, keys: Sequence[Key], workers: int) -> None:
        self.keyring = Keyring(keys)
        self.workers = workers
        self._workers: list[_Worker] = []
        try:
            for _ in range(workers):
                here, there, send_room = _pipe()
                try:
                    process = _start_worker(there)
                except BaseException:
                    here.close()
                    raise
                finally:
                    there.close()
                self._workers.append(_Worker(process, here, send_room))
                here.send(self.keyring.keys)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"CryptoPool({self.workers} workers)"

    def has_room(self) -> bool:
        """Whether a worker takes a small message (a :class:`RowRange`) now."""
        return min(w.outstanding for w in self._workers) < BATCHES_PER_WORKER

    def try_submit(self, spec: BatchSpec, rows: list[Row] | RowRange) -> PendingBatch | None:
        """Hand the batch to a worker if one can take it now; None: the caller does it itself.

        An idle worker always takes it (it is reading, so the send completes). A
        busy one takes another batch only if the whole message fits in its pipe.
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

    def release_reads(self) -> None:
        """Every worker closes the connections it read :class:`RowRange` batches on; results not yet
        collected are dropped. Returns once all have (a worker that is gone holds none)."""
        for worker in self._workers:
            with suppress(OSError, EOFError):
                worker.conn.send(RELEASE)
                while worker.conn.recv() != (True, None):
                    pass  # a result nobody waits for any more (the pass stopped early)
            worker.outstanding = 0

    def close(self) -> None:
        for worker in self._workers:
            with suppress(OSError):
                worker.conn.send(None)
            worker.conn.close()  # a worker still sending a result gets an error and stops too
        for worker in self._workers:
            try:
                worker.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                worker.process.kill()  # it ignores SIGTERM
                worker.process.wait()
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
