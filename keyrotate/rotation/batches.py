"""The hot path: classify, re-encrypt and check one batch of whole-value secrets.

A batch is a list of ``(rowid, stored value)`` rows of one catalogued location.
:func:`process_batch` is a pure function of the keys and the rows, so it runs
the same in this process or in a worker (:mod:`keyrotate.rotation.workers`). Results
carry counts, row ids and new ciphertexts, never a plaintext.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyrotate.errors import VerificationError
from keyrotate.trek.formats import API_PREFIX, IV_BYTES, MIN_SEALED_BYTES, TAG_BYTES, Scheme, node_base64_decode
from keyrotate.trek.keys import Key

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
