"""Text in, text out over keyrotate's one cipher primitive: how the tests write and read TREK values."""

from __future__ import annotations

from keyrotate.trek.formats import API_PREFIX, Cipher, Scheme
from keyrotate.trek.keys import Key


def encrypt_text(plaintext: str, key: Key, scheme: Scheme) -> str:
    """Encrypt a string the way TREK does (trimmed first, as TREK trims input)."""
    return Cipher(key, scheme).seal(plaintext.strip().encode("utf-8"))


def decrypt_text(stored: str, key: Key, scheme: Scheme) -> str | None:
    """Decrypt to text, or None when the value does not open under ``key``."""
    if scheme is Scheme.API and not (isinstance(stored, str) and stored.startswith(API_PREFIX)):
        return None
    opened = Cipher(key, scheme).open(stored)
    return None if opened is None else opened.decode("utf-8", errors="replace")
