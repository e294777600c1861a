"""Seal the sample database's secrets under one key, from one seeded random source, and note each one."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

from keyrotate.trek.formats import IV_BYTES, Cipher, Scheme
from keyrotate.trek.keys import Key

_TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
_UNICODE_SAMPLES = ("🔐🗝️ emoji pass", "旅行の合言葉", "pässwörd ünïcode", "multi\nline secret")


@dataclass(frozen=True)
class SampleSecret:
    table: str
    column: str
    key: dict[str, Any]
    scheme: str  # api | mfa | plain | legacy-plain
    plaintext: str
    json_path: tuple[Any, ...] | None = None


class SecretWriter:
    """Random texts and sealed secrets; with ``keep``, each secret is noted for the tests that look for it."""

    def __init__(self, key: Key, rng: random.Random, keep: bool) -> None:
        self.api = Cipher(key, Scheme.API)
        self.mfa = Cipher(key, Scheme.MFA)
        self.rng = rng
        self.keep = keep
        self.secrets: list[SampleSecret] = []
        self.count = 0

    def text(self, length: int) -> str:
        if self.rng.random() < 0.01:
            return self.rng.choice(_UNICODE_SAMPLES)
        return "".join(self.rng.choices(_TOKEN_ALPHABET, k=length))

    def seal(self, table: str, column: str, key: dict[str, Any], plaintext: str, *,
             scheme: Scheme = Scheme.API, json_path: tuple[Any, ...] | None = None) -> str:
        cipher = self.api if scheme is Scheme.API else self.mfa
        self.count += 1
        if self.keep:
            self.secrets.append(SampleSecret(table, column, dict(key), scheme.value, plaintext, json_path))
        return cipher.seal(plaintext.encode("utf-8"), iv=self.rng.randbytes(IV_BYTES))

    def note(self, table: str, column: str, key: dict[str, Any], plaintext: str, scheme: str) -> None:
        if self.keep:
            self.secrets.append(SampleSecret(table, column, dict(key), scheme, plaintext))

    def maybe(self, rate: float, table: str, column: str, key: dict[str, Any], length: int,
              scheme: Scheme = Scheme.API) -> str | None:
        if self.rng.random() >= rate:
            return None
        if scheme is Scheme.MFA:
            plaintext = "".join(self.rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", k=32))
        else:
            plaintext = self.text(length)
        return self.seal(table, column, key, plaintext, scheme=scheme)
