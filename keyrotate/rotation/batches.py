"""The hot path: classify, re-encrypt and check one batch of whole-value secrets.

A batch is a list of ``(rowid, stored value)`` rows of one catalogued location.
:func:`process_batch` is a pure function of the keys and the rows, so it runs
the same in this process or in a worker (:mod:`keyrotate.rotation.workers`). A
worker may read a batch's rows itself (:class:`RowRange`, :func:`read_range`).
Results carry counts, row ids, new ciphertexts and a keyed digest, never a plaintext.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyrotate.errors import KeyrotateError, VerificationError
from keyrotate.rotation.text_digest import digest_name, digest_texts, texts_after
from keyrotate.trek.formats import IV_BYTES, UNOPENED, Keyring, Scheme

if TYPE_CHECKING:
    import sqlite3

Row = tuple[int, Any]
NOT_OPENED = "opens under none of the keys"


@dataclass(frozen=True)
class BatchSpec:
    """What to do with a batch. Small and picklable: it travels with every batch."""

    label: str
    table: str
    column: str
    scheme: Scheme
    key_order: tuple[int, ...]  # indexes into the keyring's keys, in order of preference
    new_index: int | None = None  # position in key_order to re-encrypt to; None: read only
    encrypt_plaintext: bool = False
    report_tokens: bool = False  # list every token's row and the key that opened it
    # Set when the texts the batch leaves must be digested (see StoredDigest): its per-run key, and
    # whether the location's rowids may be renumbered (each cell digested alone).
    digest_key: bytes | None = field(default=None, repr=False)
    digest_loose: bool = False


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
    tokens: list[tuple[int, int]] = field(default_factory=list)  # (rowid, key position or -1) when asked
    digest: int | None = None  # of the texts the batch leaves, when the spec has a digest key

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Sent back from a worker: the new values travel as one string (base64 text holds
        # no NUL), which pickles far faster than thousands of small tuples.
        others = tuple(getattr(self, name) for name in _RESULT_FIELDS)
        return _unpack_result, ("\x00".join(value for value, _ in self.updates),
                                [rowid for _, rowid in self.updates], others)


_RESULT_FIELDS = ("opened_by", "plaintext", "encryptable_plaintext", "encrypted_plaintext", "rewritten", "unopened",
                  "tokens", "digest")


def _unpack_result(values: str, rowids: list[int], others: tuple[Any, ...]) -> BatchResult:
    updates = list(zip(values.split("\x00"), rowids, strict=True)) if rowids else []
    return BatchResult(updates, **dict(zip(_RESULT_FIELDS, others, strict=True)))


@dataclass(frozen=True)
class RowRange:
    """A batch for a worker to read itself: what ``sql`` picks between two row ids of the database at ``path``.

    Only sound while the sender holds the write lock of a WAL database and has not
    committed: every connection but its own then sees the database as it was before
    the rotation, and the sender never writes a row before it is read.
    """

    path: str
    sql: str
    params: tuple[Any, ...]
    count: int  # rows the sender found there


READER_CACHE_KIB = 256  # each batch is read once, in rowid order: a big page cache would only hold memory
_readers: dict[str, sqlite3.Connection] = {}  # a worker's read-only connections, one per database


def read_range(rows: RowRange) -> list[Row]:
    """The rows of ``rows``, read on this process's own read-only connection to its database."""
    conn = _readers.get(rows.path)
    if conn is None:
        # Imported here: a worker that is only handed rows never loads SQLite.
        import sqlite3

        from keyrotate.store.database import read_only_uri

        conn = _readers[rows.path] = sqlite3.connect(read_only_uri(Path(rows.path)), uri=True,
                                                     isolation_level=None, timeout=30)
        conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
    batch = conn.execute(rows.sql, rows.params).fetchall()
    if len(batch) != rows.count:  # another connection saw other rows: never expected, never written
        raise KeyrotateError("A crypto worker read other rows than the rotation found; nothing was committed.")
    return batch


def close_readers() -> None:
    """Close the connections :func:`read_range` opened (the database's -wal can then be tidied away)."""
    while _readers:
        _readers.popitem()[1].close()


Packed = tuple[list[int], str] | list[Row] | RowRange  # a batch's rows as they travel to a worker
RELEASE = "release"  # the message that has a worker close its read-only connections (see RowRange)


def unpack_rows(packed: Packed) -> list[Row]:
    """The rows :func:`keyrotate.rotation.workers._pack_rows` packed (or, for a :class:`RowRange`, read them)."""
    if isinstance(packed, RowRange):
        return read_range(packed)
    if isinstance(packed, list):
        return packed
    rowids, joined = packed
    return list(zip(rowids, joined.split("\x00"), strict=True))


def serve_message(keyring: Keyring, message: Any) -> BatchResult | None:
    """What a worker does with one message from its pool: a ``(spec, packed rows)`` batch, or :data:`RELEASE`."""
    if message == RELEASE:
        close_readers()
        return None
    spec, packed = message
    return process_batch(keyring, spec, unpack_rows(packed))


def rewrite_failed(table: str, column: str, rowid: int) -> VerificationError:
    """The error for a new ciphertext that did not read back: names the row, never the value."""
    return VerificationError(
        f"Re-encrypted value in {table}.{column} row {rowid} did not read back; nothing was committed."
    )


def process_batch(keyring: Keyring, spec: BatchSpec, rows: Sequence[Row]) -> BatchResult:
    """Classify every row; when ``spec.new_index`` is set, re-encrypt what needs it.

    Each value is read with :meth:`Keyring.reader` and each new value made with
    :meth:`Cipher.checked_sealer`, the same primitives every other path uses: a
    new value that does not read back raises :class:`VerificationError` naming
    the row, and nothing gets written.

    Runs once per value for the whole database, so it is written for speed:
    everything it touches per value is a local, and no exception is raised on
    the common path.
    """
    ring = keyring.reordered(spec.key_order)
    scheme = spec.scheme
    read = ring.reader(scheme)
    result = BatchResult([], [0] * len(ring))
    opened_by = result.opened_by
    unopened = result.unopened
    append = result.updates.append
    new_index = spec.new_index
    seal = ring.cipher(new_index, scheme).checked_sealer() if new_index is not None else None
    encrypt_plaintext = seal is not None and spec.encrypt_plaintext and scheme is Scheme.API
    ivs = os.urandom(IV_BYTES * len(rows)) if seal is not None else b""
    iv_at = 0
    plain = encryptable = encrypted_plain = rewritten = 0
    tokens = result.tokens if spec.report_tokens else None
    mfa = scheme is Scheme.MFA

    for rowid, value in rows:
        if value.__class__ is not str:
            plain += 1  # a number or blob where TREK expects text: left alone
            continue
        index, plaintext = read(value)
        if index >= 0:
            opened_by[index] += 1
            if tokens is not None:
                tokens.append((rowid, index))
        elif index == UNOPENED:
            if tokens is not None:
                tokens.append((rowid, -1))
            unopened.append(rowid)
            continue
        else:  # PLAINTEXT
            plain += 1
            if mfa:  # an unencrypted TOTP seed: counted as plaintext (not a token: none in tokens), never rewritten
                continue
            encryptable += 1  # legacy plaintext in an api location
            if not encrypt_plaintext:
                continue
        if seal is None or index == new_index:
            continue
        new_value = seal(plaintext, ivs[iv_at : iv_at + IV_BYTES])
        iv_at += IV_BYTES
        if new_value is None:
            raise rewrite_failed(spec.table, spec.column, rowid)
        append((new_value, rowid))
        if index < 0:
            encrypted_plain += 1
        else:
            rewritten += 1
    result.plaintext = plain
    result.encryptable_plaintext = encryptable
    result.encrypted_plaintext = encrypted_plain
    result.rewritten = rewritten
    if spec.digest_key is not None:
        result.digest = digest_texts(spec.digest_key, digest_name(spec.label, ""), spec.digest_loose,
                                     [row[0] for row in rows], texts_after(rows, result.updates))
    return result
