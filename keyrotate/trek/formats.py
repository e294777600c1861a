"""TREK's two ciphertext formats, read as leniently as TREK's Node code reads them.

Both are AES-256-GCM with a 12-byte IV and a 16-byte tag, stored as
``base64(iv || tag || ciphertext)``. The api scheme prefixes ``enc:v1:``; the
mfa scheme has no prefix. Plaintexts are handled as bytes so that re-encryption
keeps them exactly, whatever TREK once wrote.
"""

from __future__ import annotations

import binascii
import enum
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyrotate.trek.keys import API_DOMAIN, MFA_DOMAIN, Key

API_PREFIX = "enc:v1:"
IV_BYTES = 12
TAG_BYTES = 16
MIN_SEALED_BYTES = IV_BYTES + TAG_BYTES

# Node's Buffer.from(s, "base64") accepts both alphabets, skips anything else,
# stops at the first "=" and drops a lone trailing character.
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
# An api token embedded in free text ends where the base64 alphabet ends.
EMBEDDED_TOKEN = re.compile(r"enc:v1:[A-Za-z0-9+/_=-]*")


class Scheme(enum.Enum):
    API = "api"
    MFA = "mfa"

    @property
    def domain(self) -> str:
        return API_DOMAIN if self is Scheme.API else MFA_DOMAIN


def node_base64_decode(text: str) -> bytes:
    """Decode base64 exactly as Node 20's ``Buffer.from(text, 'base64')`` does."""
    try:
        # Fast path: canonical padded base64, which is what TREK writes.
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    cleaned = text.translate(_URLSAFE_TO_STANDARD).split("=", 1)[0]
    cleaned = _NOT_BASE64.sub("", cleaned)
    usable = len(cleaned) - (len(cleaned) % 4 == 1)
    cleaned = cleaned[:usable]
    cleaned += "=" * (-len(cleaned) % 4)
    return binascii.a2b_base64(cleaned)


class Cipher:
    """One key's AES-GCM instance for one scheme. Reused for every value."""

    __slots__ = ("_aead", "key", "scheme")

    def __init__(self, key: Key, scheme: Scheme) -> None:
        self.key = key
        self.scheme = scheme
        self._aead = AESGCM(key.aes_key(scheme.domain))

    def __repr__(self) -> str:
        return f"Cipher({self.key!r}, {self.scheme.value})"

    def open(self, stored: str) -> bytes | None:
        """The plaintext bytes of a stored value, or None if it does not open.

        For the api scheme ``stored`` must carry the prefix; callers decide
        what a value without it means.
        """
        body = stored[len(API_PREFIX) :] if self.scheme is Scheme.API else stored
        return self.open_sealed(node_base64_decode(body))

    def open_sealed(self, sealed: bytes) -> bytes | None:
        if len(sealed) < MIN_SEALED_BYTES:
            return None
        iv = sealed[:IV_BYTES]
        tag = sealed[IV_BYTES:MIN_SEALED_BYTES]
        try:
            return self._aead.decrypt(iv, sealed[MIN_SEALED_BYTES:] + tag, None)
        except InvalidTag:
            return None

    def seal(self, plaintext: bytes, iv: bytes | None = None) -> str:
        """Encrypt as TREK writes: standard padded base64, tag before ciphertext.

        ``iv`` exists for tests that pin exact bytes; real callers leave it out.
        """
        if iv is None:
            iv = os.urandom(IV_BYTES)
        elif len(iv) != IV_BYTES:
            raise ValueError("AES-GCM IV must be 12 bytes")
        out = self._aead.encrypt(iv, plaintext, None)
        body = binascii.b2a_base64(iv + out[-TAG_BYTES:] + out[:-TAG_BYTES], newline=False).decode("ascii")
        return API_PREFIX + body if self.scheme is Scheme.API else body


def is_api_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(API_PREFIX)


def encrypt_text(plaintext: str, key: Key, scheme: Scheme) -> str:
    """Encrypt a string the way TREK does (trimmed first, as TREK trims input)."""
    return Cipher(key, scheme).seal(plaintext.strip().encode("utf-8"))


def decrypt_text(stored: str, key: Key, scheme: Scheme) -> str | None:
    """Decrypt to text, or None when the value does not open under ``key``."""
    if scheme is Scheme.API and not is_api_token(stored):
        return None
    opened = Cipher(key, scheme).open(stored)
    return None if opened is None else opened.decode("utf-8", errors="replace")
