"""What a scan does with each token or plaintext outside the hot path: classify, re-encrypt in place."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyrotate.rotation.batches import NOT_OPENED, rewrite_failed
from keyrotate.rotation.json_values import (
    JsonPath,
    PluginFields,
    parse_json,
    path_text,
    rewrite_json,
    rewrite_text,
    secret_paths,
)
from keyrotate.rotation.reading import Batch
from keyrotate.rotation.tallies import FailedValue, Tallies, Tally
from keyrotate.rotation.targets import DiscoveryTarget, LocationTarget
from keyrotate.trek.formats import API_PREFIX, Keyring, Scheme, is_well_formed_token

LOOKALIKE = "looks like a token but opens under none of the keys; left as it is"
NOT_OPENED_OUTSIDE = "a well-formed TREK ciphertext found outside the catalogue that opens under none of the keys"
# label, table, column, rowid, path inside the value, index of the key that opened it (None: no key)
TokenCallback = Callable[[str, str, str, int, str, int | None], None]
Update = tuple[str, int]  # (new value, rowid)


@dataclass
class Rewrite:
    """What a pass does besides classifying: re-encrypt to the key at ``new_index`` of the scan's keyring."""

    new_index: int
    encrypt_plaintext: bool


class ValueHandler:
    """JSON fields and stray tokens, value by value, with the same keyring and tallies as the batches."""

    def __init__(self, keyring: Keyring, tallies: Tallies, *,
                 rewrite: Rewrite | None, on_token: TokenCallback | None, plugin_fields: PluginFields) -> None:
        self.read = keyring.reader(Scheme.API)
        # JSON fields and stray tokens are all api scheme
        self.seal = keyring.cipher(rewrite.new_index, Scheme.API).seal_checked if rewrite is not None else None
        self.tallies = tallies
        self.rewrite = rewrite
        self.on_token = on_token
        self.plugin_fields = plugin_fields

    def token(self, tally: Tally, table: str, column: str, rowid: int, path: str, stored: str, *,
              blocking: bool) -> str | None:
        """Classify one api token; return its replacement when it must be rewritten.

        (mfa values only ever fill whole columns, which the batches handle.)
        """
        index, plaintext = self.read(stored)
        if self.on_token is not None:
            self.on_token(tally.label, table, column, rowid, path, None if index < 0 else index)
        if index < 0:  # stored starts with the prefix, so it is never PLAINTEXT: no key opens it
            if blocking:
                tally.fail(FailedValue(table, column, rowid, path, NOT_OPENED))
            elif is_well_formed_token(stored):
                # Almost surely a secret under a lost key: it blocks like a catalogued one.
                self.tallies.unopenable(table, column).fail(FailedValue(table, column, rowid, path, NOT_OPENED_OUTSIDE))
            else:
                tally.fail(FailedValue(table, column, rowid, path, LOOKALIKE))
            return None
        tally.opened_by[index] += 1
        rw = self.rewrite
        if rw is None or index == rw.new_index:
            return None
        tally.rewritten += 1
        return self._seal(table, column, rowid, plaintext)

    def plaintext(self, tally: Tally, table: str, column: str, rowid: int, path: str, value: str, *,
                  can_rewrite: bool) -> str | None:
        """Legacy plaintext in an api location; encrypted only when asked."""
        tally.plaintext += 1
        tally.encryptable_plaintext += can_rewrite
        rw = self.rewrite
        if rw is None or not rw.encrypt_plaintext or not can_rewrite:
            return None
        tally.encrypted_plaintext += 1
        return self._seal(table, column, rowid, value.encode("utf-8"))

    def _seal(self, table: str, column: str, rowid: int, plaintext: bytes) -> str:
        assert self.seal is not None
        new = self.seal(plaintext)
        if new is None:
            raise rewrite_failed(table, column, rowid)
        return new

    def json_batch(self, target: LocationTarget, batch: Batch) -> list[Update]:
        """A catalogued JSON location: its secret fields block when they do not open; other tokens are strays."""
        loc = target.location
        tally = self.tallies.of(loc.label, loc.table, loc.column, True)
        updates: list[Update] = []
        for row in batch:
            rowid, value = row[0], row[1]
            if not isinstance(value, str) or value.strip() in ("", "{}", "[]"):
                tally.empty += 1
                continue
            new = self._json_value(tally, target, rowid, value, row[2] if len(row) > 2 else None)
            if new is not None:
                updates.append((new, rowid))
        return updates

    def _json_value(self, tally: Tally, target: LocationTarget, rowid: int, value: str, plugin_id: Any) -> str | None:
        loc = target.location
        outside = self.tallies.outside(loc.table, loc.column)
        parsed, document = parse_json(value)
        if not parsed:  # its tokens are found like any stray token
            return self.embedded(outside, loc.table, loc.column, rowid, value)
        secret = secret_paths(loc, document, plugin_id, self.plugin_fields)
        seen: set[JsonPath] = set()

        def swap(path: JsonPath, item: str) -> tuple[str, str] | None:
            if path in secret:
                seen.add(path)
                return self._secret_field(tally, target, rowid, value, path, item)
            if item.startswith(API_PREFIX):
                new = self.token(outside, loc.table, loc.column, rowid, path_text(path), item, blocking=False)
                return None if new is None else (item, new)
            return None

        new = rewrite_json(value, document, swap, loc.label, rowid)
        tally.empty += len(secret - seen)  # secret fields not there at all
        return new

    def _secret_field(self, tally: Tally, target: LocationTarget, rowid: int, text: str, path: JsonPath,
                      item: str) -> tuple[str, str] | None:
        table, column = target.table, target.location.column
        if item == "":
            tally.empty += 1
            return None
        if item.startswith(API_PREFIX):
            new = self.token(tally, table, column, rowid, path_text(path), item, blocking=True)
            return None if new is None else (item, new)
        quoted = json.dumps(item, ensure_ascii=False)
        # Swap it only where the text says it exactly once.
        new = self.plaintext(tally, table, column, rowid, path_text(path), item, can_rewrite=text.count(quoted) == 1)
        return None if new is None else (quoted, new)

    def discovery_batch(self, target: DiscoveryTarget, batch: Batch) -> list[tuple[str, int, str]]:
        """Stray tokens: ``(new text, rowid, column)`` for every cell that changes."""
        updates: list[tuple[str, int, str]] = []
        for row in batch:
            rowid = row[0]
            for column, value in zip(target.columns, row[1:], strict=True):
                if value is None:
                    continue
                new = self.embedded(self.tallies.outside(target.table, column), target.table, column, rowid, value)
                if new is not None:
                    updates.append((new, rowid, column))
        return updates

    def embedded(self, tally: Tally, table: str, column: str, rowid: int, value: str) -> str | None:
        def swap(path: str, token: str) -> str | None:
            return self.token(tally, table, column, rowid, path, token, blocking=False)

        return rewrite_text(value, swap, f"{table}.{column}", rowid, lambda whole: self.read(whole)[0] >= 0)
