"""The hot path: classify, re-encrypt and check one batch of whole-value secrets.

A batch is a list of ``(rowid, stored value)`` rows of one catalogued location.
:func:`process_batch` is a pure function of the keys and the rows, so it runs
the same in this process or in a worker of a :class:`CryptoPool`. The crypto is
CPU-bound, so on a machine with several cores the pool spreads batches over
them while the calling process keeps all SQLite I/O to itself: every write
still goes through the one connection and the one transaction.

Keys reach the workers through the pool's initializer (inherited memory on
Linux, the pool's pipe elsewhere), never through argv, the environment or a
file. Results carry counts, row ids and new ciphertexts, never a plaintext.
"""

from __future__ import annotations

import binascii
import multiprocessing
import os
import pickle
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from hashlib import blake2b
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyrotate.errors import KeyrotateError, VerificationError
from keyrotate.formats import API_PREFIX, IV_BYTES, MIN_SEALED_BYTES, TAG_BYTES, Scheme, node_base64_decode
from keyrotate.keys import Key

Row = tuple[int, Any]
NOT_OPENED = "opens under none of the keys"


@dataclass(frozen=True)
class BatchSpec:
    """What to do with a batch. Small and picklable: it travels with every batch."""

    label: str
    table: str
    column: str
    scheme: Scheme
    key_order: tuple[int, ...]  # indexes into the context's keys, in order of preference
    new_index: int | None = None  # position in key_order to re-encrypt to; None: read only
    encrypt_plaintext: bool = False
    fingerprint_salt: bytes | None = None
    report_tokens: bool = False  # list every token's row and the key that opened it


@dataclass
class BatchResult:
    """Counts for one batch, plus the UPDATE parameters ``(new value, rowid)``."""

    updates: list[tuple[str, int]]
    opened_by: list[int]
    plaintext: int = 0
    encryptable_plaintext: int = 0
    encrypted_plaintext: int = 0
    rewritten: int = 0
    unopened: list[int] = field(default_factory=list)  # row ids; never values
    # Keyed digest of the batch's (rowid, plaintext) records, one hash per batch: a
    # rotation reads the same batches before and after (the same rows stay non-empty),
    # so the post-commit pass must arrive at the same digests.
    fingerprint: int = 0
    fingerprinted: int = 0
    tokens: list[tuple[int, int]] = field(default_factory=list)  # (rowid, key position or -1) when asked

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Sent back from a worker: the new values travel as one string (base64 text holds
        # no NUL), which pickles far faster than thousands of small tuples.
        others = tuple(getattr(self, name) for name in _RESULT_FIELDS)
        return _unpack_result, ("\x00".join(value for value, _ in self.updates),
                                [rowid for _, rowid in self.updates], others)


_RESULT_FIELDS = ("opened_by", "plaintext", "encryptable_plaintext", "encrypted_plaintext", "rewritten", "unopened",
                  "fingerprint", "fingerprinted", "tokens")


def _unpack_result(values: str, rowids: list[int], others: tuple[Any, ...]) -> BatchResult:
    updates = list(zip(values.split("\x00"), rowids, strict=True)) if rowids else []
    return BatchResult(updates, **dict(zip(_RESULT_FIELDS, others, strict=True)))


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


class CryptoContext:
    """One AES-GCM instance per key and scheme, built once per process."""

    def __init__(self, keys: Sequence[Key]) -> None:
        self.keys = tuple(keys)
        self._aeads = {
            scheme: [AESGCM(key.aes_key(scheme.domain)) for key in self.keys] for scheme in Scheme
        }

    def __repr__(self) -> str:
        return f"CryptoContext({len(self.keys)} keys)"

    def aeads(self, scheme: Scheme, order: Sequence[int]) -> list[AESGCM]:
        by_key = self._aeads[scheme]
        return [by_key[i] for i in order]

    def index_of(self, key: Key) -> int:
        for index, known in enumerate(self.keys):
            if known is key:
                return index
        raise ValueError("key not in this context")


def process_batch(context: CryptoContext, spec: BatchSpec, rows: Sequence[Row]) -> BatchResult:
    """Classify every row; when ``spec.new_index`` is set, re-encrypt what needs it.

    Each new value is checked before it is handed back: its stored text must
    decode to exactly the IV, tag and ciphertext just made, and those must
    decrypt under the new key to the original plaintext. A mismatch raises
    :class:`VerificationError` naming the row, and nothing gets written.

    Runs once per value for the whole database, so it is written for speed:
    everything it touches per value is a local, and no exception is raised on
    the common path.
    """
    aeads = context.aeads(spec.scheme, spec.key_order)
    first = aeads[0] if aeads else None  # no keys at all: only classify
    api = spec.scheme is Scheme.API
    prefix = API_PREFIX if api else ""
    skip = len(prefix)
    result = BatchResult([], [0] * len(aeads))
    opened_by = result.opened_by
    updates = result.updates
    unopened = result.unopened
    new_index = spec.new_index
    new_aead = aeads[new_index] if new_index is not None else None
    encrypt_plaintext = new_aead is not None and spec.encrypt_plaintext
    ivs = os.urandom(IV_BYTES * len(rows)) if new_aead is not None else b""
    iv_at = 0
    # (rowid, plaintext) records of the batch, hashed once at the end (see BatchResult.fingerprint)
    records: list[bytes] | None = [] if spec.fingerprint_salt is not None else None
    plain = encryptable = encrypted_plain = rewritten = 0
    a2b = binascii.a2b_base64
    b2a = binascii.b2a_base64
    from_bytes = int.from_bytes
    append = updates.append
    tokens = result.tokens if spec.report_tokens else None

    for rowid, value in rows:
        if value.__class__ is not str:
            plain += 1  # a number or blob where TREK expects text: left alone
            continue
        if api and not value.startswith(API_PREFIX):
            # Legacy plaintext in an api location.
            plain += 1
            encryptable += 1
            if not encrypt_plaintext:
                continue
            plaintext = value.encode("utf-8")
            index = -1
        else:
            body = value[skip:] if skip else value
            try:
                sealed = a2b(body, strict_mode=True)
            except (binascii.Error, ValueError):
                sealed = node_base64_decode(body)
            iv, data = sealed[:IV_BYTES], sealed[MIN_SEALED_BYTES:] + sealed[IV_BYTES:MIN_SEALED_BYTES]
            try:
                if first is None or len(sealed) < MIN_SEALED_BYTES:
                    raise InvalidTag
                plaintext = first.decrypt(iv, data, None)
                index = 0
            except InvalidTag:
                index, plaintext = _open_with_others(aeads, iv, data, len(sealed))
                if index < 0:
                    if tokens is not None:
                        tokens.append((rowid, -1))
                    if not api and _looks_like_plain_totp_seed(value, sealed):
                        plain += 1
                    else:
                        unopened.append(rowid)
                    continue
            opened_by[index] += 1
            if tokens is not None:
                tokens.append((rowid, index))
        if records is not None:
            records.append(b"%d\x00%d\x00%s" % (rowid, len(plaintext), plaintext))
        if new_aead is None or index == new_index:
            continue
        iv = ivs[iv_at : iv_at + IV_BYTES]
        iv_at += IV_BYTES
        out = new_aead.encrypt(iv, plaintext, None)  # ciphertext || tag
        sealed = iv + out[-TAG_BYTES:] + out[:-TAG_BYTES]  # TREK's order: iv || tag || ciphertext
        new_value = prefix + b2a(sealed, newline=False).decode("ascii")
        try:
            same = (a2b(new_value[skip:] if skip else new_value, strict_mode=True) == sealed
                    and new_aead.decrypt(iv, out, None) == plaintext)
        except (InvalidTag, binascii.Error, ValueError):
            same = False
        if not same:
            raise VerificationError(
                f"Re-encrypted value in {spec.table}.{spec.column} row {rowid} did not read back; "
                "nothing was committed."
            )
        append((new_value, rowid))
        if index < 0:
            encrypted_plain += 1
        else:
            rewritten += 1
    result.plaintext = plain
    result.encryptable_plaintext = encryptable
    result.encrypted_plaintext = encrypted_plain
    result.rewritten = rewritten
    if records:
        digest = blake2b(key=spec.fingerprint_salt or b"", digest_size=16, person=b"keyrotate-batch")
        digest.update(spec.label.encode() + b"\x00")
        digest.update(b"".join(records))
        result.fingerprint = from_bytes(digest.digest(), "big")
        result.fingerprinted = len(records)
    return result


def _open_with_others(aeads: Sequence[AESGCM], iv: bytes, data: bytes, size: int) -> tuple[int, bytes]:
    if size < MIN_SEALED_BYTES:
        return -1, b""
    for index in range(1, len(aeads)):
        try:
            return index, aeads[index].decrypt(iv, data, None)
        except InvalidTag:
            continue
    return -1, b""


def _looks_like_plain_totp_seed(value: str, decoded: bytes) -> bool:
    """An unencrypted base32 seed: base32 letters only, too short to be sealed."""
    stripped = value.strip()
    body = stripped.rstrip("=")
    return bool(body) and len(decoded) < MIN_SEALED_BYTES and all(c in _BASE32_LETTERS for c in body)


_BASE32_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

# -- the worker pool -----------------------------------------------------------

# A worker holds the batch it is working on plus, when it fits in the pipe's buffer, the next one.
# A second batch is only sent when the kernel can take all of it at once: the sender then never
# blocks, so the two sides can never both be stuck sending to each other.
BATCHES_PER_WORKER = 2


def _serve(keys: tuple[Key, ...], conn: Connection) -> None:
    """A worker's loop: batches in, results out, until told to stop."""
    # Ctrl-C is the parent's to handle: it rolls back and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = CryptoContext(keys)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        spec, packed = message
        try:
            reply: tuple[bool, Any] = (True, process_batch(context, spec, _unpack_rows(packed)))
        except KeyrotateError as exc:  # messages name rows, never values
            reply = (False, exc)
        except Exception as exc:  # noqa: BLE001 - anything else is a bug; its type is enough
            reply = (False, KeyrotateError(f"A crypto worker failed ({type(exc).__name__}); nothing was committed."))
        conn.send(reply)


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
        self.context = CryptoContext(keys)
        self.workers = workers
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
        self._workers: list[_Worker] = []
        try:
            for _ in range(workers):
                here, there, send_room = _pipe()
                process = ctx.Process(target=_serve, args=(self.context.keys, there), daemon=True)
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
        for worker in self._workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join()
            worker.conn.close()
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
