"""Tokens inside JSON and free text: where they sit, and one loop that swaps them in the raw text."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from keyrotate.errors import VerificationError
from keyrotate.trek.catalogue import JsonSecrets, SecretLocation
from keyrotate.trek.formats import API_PREFIX, token_spans

JsonPath = tuple[str | int, ...]
# Offered every string of a document: (exact text to swap, its replacement), or None to leave it.
Swap = Callable[[JsonPath, str], tuple[str, str] | None]
# Offered a token and where it is ("$.a[0]", "@12" in free text, "" for the whole value): its replacement or None.
TokenSwap = Callable[[str, str], str | None]
PluginFields = dict[tuple[str, str], frozenset[str]]  # (plugin id, scope) -> secret field names


def parse_json(value: str) -> tuple[bool, Any]:
    """(True, document), or (False, None) for text that is not JSON (or nested too deep to be TREK's)."""
    try:
        return True, json.loads(value)
    except (ValueError, RecursionError):
        return False, None


def rewrite_json(text: str, document: Any, swap: Swap, label: str, rowid: int) -> str | None:
    """The one JSON rewrite loop: every string of ``document`` offered to ``swap``, the swaps made in ``text``."""
    replacements: dict[str, str] = {}
    for path, item in json_strings(document):
        found = swap(path, item)
        if found is not None:
            replacements[found[0]] = found[1]
    return _replace_json_strings(text, replacements, label, rowid) if replacements else None


def rewrite_text(value: str, swap: TokenSwap, label: str, rowid: int, opens: Callable[[str], bool]) -> str | None:
    """Tokens anywhere in a text: the whole value, JSON strings, or runs in free text.

    A value that starts with ``enc:v1:`` is one token when the token's span ends it (whitespace after it
    stays), or when only the whole value opens (``opens``): Node's decoder skips what is not base64 (a
    newline, a space, ``*``), so a TREK that read this cell would read that token.
    """
    if value.startswith(API_PREFIX):
        end = next(token_spans(value))[1]
        if not value[end:].strip():
            new = swap("", value[:end])
            return None if new is None else new + value[end:]
        if not opens(value[:end]) and opens(value):
            return swap("", value)
    if value.lstrip()[:1] in ("{", "["):
        parsed, document = parse_json(value)  # a note like "[[[[..." is text, not a crash
        if parsed:
            def token_only(path: JsonPath, item: str) -> tuple[str, str] | None:
                new = swap(path_text(path), item) if item.startswith(API_PREFIX) else None
                return None if new is None else (item, new)
            return rewrite_json(value, document, token_only, label, rowid)
    pieces: list[str] = []
    last = 0
    changed = False
    for start, end in token_spans(value):
        new = swap(f"@{start}", value[start:end])
        pieces.append(value[last:start])
        pieces.append(new if new is not None else value[start:end])
        changed = changed or new is not None
        last = end
    pieces.append(value[last:])
    return "".join(pieces) if changed else None


def json_strings(document: Any, path: JsonPath = ()) -> Iterator[tuple[JsonPath, str]]:
    # With a stack, not recursion: json.loads accepts nesting deep enough to exhaust Python's.
    stack: list[tuple[JsonPath, Any]] = [(path, document)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            stack.extend(reversed([((*where, name), child) for name, child in item.items()]))
        elif isinstance(item, list):
            stack.extend(reversed([((*where, index), child) for index, child in enumerate(item)]))


def path_text(path: JsonPath) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def secret_paths(loc: SecretLocation, document: Any, plugin_id: Any, plugin_fields: PluginFields) -> set[JsonPath]:
    """Where the catalogue says a JSON location's secrets are, in this document."""
    if loc.json_secrets is JsonSecrets.S3_BACKENDS:
        if not isinstance(document, list):
            return set()
        return {
            (i, "options", "secretAccessKey")
            for i, backend in enumerate(document)
            if isinstance(backend, dict) and backend.get("type") == "s3"
        }
    if loc.json_secrets is JsonSecrets.FIELDS:
        return {(name,) for name in loc.json_fields}
    scope = "instance" if loc.json_secrets is JsonSecrets.PLUGIN_INSTANCE else "user"
    return {(name,) for name in plugin_fields.get((str(plugin_id), scope), frozenset())}


def load_plugin_fields(conn: sqlite3.Connection, schema: dict[str, tuple[str, ...]]) -> PluginFields:
    """The plugin config fields TREK encrypts, by plugin and scope (``plugin_settings_fields.secret = 1``)."""
    columns = schema.get("plugin_settings_fields", ())
    if not {"plugin_id", "field_key", "secret"} <= set(columns):
        return {}  # no list of secret fields: tokens in plugin configs are still found, as outside the catalogue
    # Without a scope column every field is an instance field, as before per-user plugin settings (TREK 3.3.0).
    scope = "scope" if "scope" in columns else "'instance'"
    fields: dict[tuple[str, str], set[str]] = {}
    rows = conn.execute(f"SELECT plugin_id, field_key, {scope} FROM plugin_settings_fields WHERE secret = 1")
    for plugin_id, field_key, scope in rows:
        fields.setdefault((str(plugin_id), str(scope)), set()).add(str(field_key))
    return {k: frozenset(v) for k, v in fields.items()}


def _replace_json_strings(text: str, replacements: dict[str, str], label: str, rowid: int) -> str:
    """Swap string values inside raw JSON text, leaving every other byte as it was.

    Re-serialising would reformat numbers and escapes TREK wrote; an exact
    textual swap cannot. Keys of ``replacements`` are either a bare token (its
    text appears verbatim between quotes) or an already-quoted JSON string.
    """
    for old, new in replacements.items():
        quoted_old = old if old.startswith('"') else f'"{old}"'
        if quoted_old in text:
            text = text.replace(quoted_old, f'"{new}"')
            continue
        # Written with escapes TREK's JSON.stringify never uses (``\/``, ``\u0065``...): swap each string
        # value whose decoded text is the one to replace, whatever its escapes.
        # A bare token is the decoded text already: it may hold what JSON escapes (a newline Node's decoder skips).
        text = _swap_escaped(text, json.loads(old) if old.startswith('"') else old, f'"{new}"')
        if f'"{new}"' not in text:
            raise VerificationError(
                f"A value inside the JSON in {label} row {rowid} could not be found to rewrite; nothing was committed."
            )
    return text


# Every string in raw JSON text, matched from the start: outside strings JSON has no quote, so each match is one
# whole string, a key or a value (a key is followed by a colon).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_KEY_COLON = re.compile(r"\s*:")


def _swap_escaped(text: str, value: str, quoted_new: str) -> str:
    """``text`` with every string value (not key) that decodes to ``value`` replaced by ``quoted_new``."""
    def swap(match: re.Match[str]) -> str:
        if _KEY_COLON.match(text, match.end()) or json.loads(match.group()) != value:
            return match.group()
        return quoted_new

    return _JSON_STRING.sub(swap, text)
