"""Fuzzing the ciphertext parser and the JSON / embedded-token handling with arbitrary text.

The only outcomes allowed: "not a token", "does not open", or (for a real token
hidden in the text) rotated with every other byte of the value kept. Never an
exception, never a hang. ``--hypothesis-profile=long`` runs many more examples.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyrotate.rotation.scanning import Scanner
from keyrotate.rotation.values import Rewrite
from keyrotate.store.database import connect
from keyrotate.trek.catalogue import resolve_catalogue
from keyrotate.trek.formats import (
    API_PREFIX,
    MIN_SEALED_BYTES,
    Cipher,
    Keyring,
    Scheme,
    node_base64_decode,
    token_spans,
)
from keyrotate.trek.keys import Key
from keyrotate.trek.sample import build_sample_database
from keyrotate.trek.schema import inspect_database

OLD = Key("fuzz old key", "old")
NEW = Key("fuzz new key", "new")
OLD_API, NEW_API = Cipher(OLD, Scheme.API), Cipher(NEW, Scheme.API)
TOKEN_CHARS = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ *\n:enc:v1:{}[]\"\\")
texty = st.one_of(st.text(), st.text(TOKEN_CHARS), st.binary().map(lambda b: b.decode("latin-1")))
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(texty)
def test_node_base64_decode_never_raises(text: str) -> None:
    decoded = node_base64_decode(text)
    assert isinstance(decoded, bytes)
    assert len(decoded) <= len(text) * 3 // 4 + 2


@FUZZ
@given(texty, st.sampled_from(list(Scheme)), st.booleans())
def test_cipher_and_keyring_open_arbitrary_text_to_nothing(text: str, scheme: Scheme, prefixed: bool) -> None:
    stored = API_PREFIX + text if prefixed else text
    assert Cipher(OLD, scheme).open(stored) is None
    assert Keyring((OLD, NEW)).open(stored, scheme) is None


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_sealed_bytes_do_not_open(sealed: bytes) -> None:
    assert OLD_API.open_sealed(sealed) is None


@FUZZ
@given(st.text(min_size=1, max_size=80), st.data())
def test_a_damaged_token_opens_to_its_plaintext_or_not_at_all(plaintext: str, data: st.DataObject) -> None:
    token = OLD_API.seal(plaintext.encode())
    position = data.draw(st.integers(0, len(token)))
    edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    char = data.draw(st.characters())
    damaged = {
        "insert": token[:position] + char + token[position:],
        "delete": token[:position] + token[position + 1 :],
        "replace": token[:position] + char + token[position + 1 :],
    }[edit]
    opened = Keyring((NEW, OLD)).open(damaged, Scheme.API) if damaged.startswith(API_PREFIX) else None
    assert opened is None or opened == (1, plaintext.encode())  # AES-GCM: never a different plaintext


# -- the catalogue's JSON handling and token discovery, on a real database -----------------


@pytest.fixture(scope="module")
def fuzz_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "travel.db"
    build_sample_database(path, OLD, users=3, seed=3)
    with closing(connect(path)) as conn:
        yield conn


def scan(conn: sqlite3.Connection, tables: set[str]) -> Scanner:
    """Rotate (old -> new) only the targets of ``tables``; the caller rolls back."""
    info = inspect_database(conn, Path("travel.db"))
    resolved = resolve_catalogue(info.schema, info.version)
    rewrite = Rewrite(1, False)
    scanner = Scanner(conn, info, resolved, Keyring((OLD, NEW)), rewrite=rewrite)
    for target in scanner.targets():
        if target.table in tables:
            scanner.run_target(target, "rotate", None)
    return scanner


WRITERS = {  # where the text goes, how to read it back, which table's targets to run
    "free text (discovery)": ("UPDATE trips SET description = ? WHERE id = 1",
                              "SELECT description FROM trips WHERE id = 1", {"trips"}),
    "plugin config (catalogued JSON)": ("UPDATE plugins SET config = ? WHERE id = (SELECT min(id) FROM plugins)",
                                        "SELECT config FROM plugins ORDER BY id LIMIT 1", {"plugins"}),
    "storage.backends (S3 JSON)": ("INSERT OR REPLACE INTO app_settings (key, value) VALUES ('storage.backends', ?)",
                                   "SELECT value FROM app_settings WHERE key = 'storage.backends'", {"app_settings"}),
}


def with_value(conn: sqlite3.Connection, where: str, value: str) -> tuple[Scanner, str]:
    """Put ``value`` in place, rotate that table, read the value back, roll everything back."""
    write, read, tables = WRITERS[where]
    conn.execute("BEGIN")
    try:
        conn.execute(write, (value,))
        scanner = scan(conn, tables)
        after = conn.execute(read).fetchone()[0]
    finally:
        conn.execute("ROLLBACK")
    return scanner, after


@pytest.mark.parametrize("where", WRITERS)
@FUZZ
@given(text=st.one_of(texty, texty.map(lambda t: "{" + t), texty.map(lambda t: "[" + t),
                      texty.map(lambda t: API_PREFIX + t)))
def test_arbitrary_text_is_not_a_token_or_does_not_open(fuzz_db: sqlite3.Connection, where: str, text: str) -> None:
    _, after = with_value(fuzz_db, where, text)
    assert after == text  # nothing that does not open is ever rewritten


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(), st.just("TOKEN"), st.just(API_PREFIX))
json_documents = st.recursive(
    json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)),
    max_leaves=12,
)


@pytest.mark.parametrize("where", WRITERS)
@FUZZ
@given(document=json_documents, plaintext=st.text(min_size=1, max_size=40), ascii_only=st.booleans(),
       indent=st.sampled_from([None, 0, 2]), escaped_slashes=st.booleans(),
       gap=st.sampled_from(["", "\n", "\t", " ", "\r\n"]), gap_at=st.integers(10, 40))
def test_a_real_token_anywhere_in_json_is_rotated_and_nothing_else_changes(
    fuzz_db: sqlite3.Connection, where: str, document: Any, plaintext: str, ascii_only: bool, indent: int | None,
    escaped_slashes: bool, gap: str, gap_at: int,
) -> None:
    token = OLD_API.seal(plaintext.encode())
    while escaped_slashes and "/" not in token:  # a token with a slash, so that escaping it changes the text
        token = OLD_API.seal(plaintext.encode())
    token = token[:gap_at] + gap + token[gap_at:]  # Node's decoder skips whitespace: TREK reads such a token
    document = _substitute(document, token)
    text = json.dumps(document, ensure_ascii=ascii_only, indent=indent)
    if escaped_slashes:  # as PHP's json_encode and some tools write JSON: TREK's JSON.stringify never does
        text = text.replace("/", "\\/")
    _, after = with_value(fuzz_db, where, text)
    rotated = json.loads(after)
    assert _substitute(_opened(rotated, plaintext), token) == document  # the same document, token for token


def _substitute(document: Any, token: str) -> Any:
    if document == "TOKEN":
        return token
    if isinstance(document, list):
        return [_substitute(d, token) for d in document]
    if isinstance(document, dict):
        return {k: _substitute(v, token) for k, v in document.items()}
    return document


def _opened(document: Any, plaintext: str) -> Any:
    """Every string that opens under the new key becomes 'TOKEN' (after checking its plaintext)."""
    if isinstance(document, str) and document.startswith(API_PREFIX) and NEW_API.open(document) is not None:
        assert NEW_API.open(document) == plaintext.encode()
        return "TOKEN"
    if isinstance(document, list):
        return [_opened(d, plaintext) for d in document]
    if isinstance(document, dict):
        return {k: _opened(v, plaintext) for k, v in document.items()}
    return document


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "{\"a\":" * 50_000, "[" * 990 + "\"x\"" + "]" * 990, API_PREFIX * 20_000,
     "enc:v1:" + "A" * 500_000, "{" + "\"enc:v1:AAAA\"," * 20_000],
    ids=["deep-open-brackets", "deep-objects", "deep-valid-json", "many-prefixes", "huge-token", "many-lookalikes"],
)
def test_adversarial_text_neither_crashes_nor_hangs(fuzz_db: sqlite3.Connection, text: str) -> None:
    for where in WRITERS:
        _, after = with_value(fuzz_db, where, text)
        assert after == text


def test_plain_text_around_a_real_token_is_kept(fuzz_db: sqlite3.Connection) -> None:
    token = OLD_API.seal(b"hidden")
    text = f"before {token} after, and enc:v1:look-alike"
    _, after = with_value(fuzz_db, "free text (discovery)", text)
    (new_token,) = [t for t in (after[a:b] for a, b in token_spans(after)) if NEW_API.open(t) is not None]
    assert after == text.replace(token, new_token)
    assert NEW_API.open(new_token) == b"hidden"
    assert len(node_base64_decode(new_token[len(API_PREFIX):])) >= MIN_SEALED_BYTES


@pytest.mark.parametrize("plaintext", [b"hidden", b"hidden1", b"hidden12"], ids=["==", "=", "no padding"])
@pytest.mark.parametrize("template", ["{t}_backup", "{t}-- old one", "x={t}=y", "{t}\r\n", "a {t}==b", "{t}"])
def test_only_the_token_is_swapped_never_the_text_after_its_padding(fuzz_db: sqlite3.Connection, template: str,
                                                                     plaintext: bytes) -> None:
    """The token ends with the padding its base64 needs: ``==_backup`` or ``=-- old one`` after it is the
    user's text, kept as it was (the new token has the same length and padding, so it stays apart)."""
    token = OLD_API.seal(plaintext)
    text = template.format(t=token)
    _, after = with_value(fuzz_db, "free text (discovery)", text)
    if token.endswith("=") or not template.startswith("{t}_") and not template.startswith("{t}-"):
        new = after.split(API_PREFIX, 1)[1][: len(token) - len(API_PREFIX)]
        assert after == text.replace(token, API_PREFIX + new)
        assert NEW_API.open(API_PREFIX + new) == plaintext
    else:  # glued to base64 letters without padding: no token Node could read, left as it was
        assert after == text


@pytest.mark.parametrize("inside", ["\n", " ", "*", "\r\n"], ids=["newline", "space", "star", "crlf"])
def test_a_whole_value_token_with_characters_node_skips_is_rotated(fuzz_db: sqlite3.Connection, inside: str) -> None:
    """Node's base64 decoder skips them, so such a value opens as it is: rewritten whole, as TREK would read it."""
    token = OLD_API.seal(b"pasted with a line break")
    text = token[:30] + inside + token[30:]
    assert OLD_API.open(text) == b"pasted with a line break"
    _, after = with_value(fuzz_db, "free text (discovery)", text)
    assert NEW_API.open(after) == b"pasted with a line break" and after.count(API_PREFIX) == 1
