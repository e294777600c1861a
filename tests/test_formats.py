"""The two ciphertext formats, exactly as TREK reads and writes them."""

from __future__ import annotations

import base64
import sqlite3
from contextlib import closing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrotate.errors import KeyProblemError
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.formats import (
    API_PREFIX,
    PLAINTEXT,
    UNOPENED,
    Cipher,
    Keyring,
    Scheme,
    node_base64_decode,
)
from keyrotate.trek.keys import Key

from .conftest import TrekCopy, stored_value
from .trek_text import decrypt_text, encrypt_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("QUJD", b"ABC"),
        ("QUJD====QUJD", b"ABC"),  # the first "=" ends the data
        ("QU=JD", b"A"),
        ("Q U\nJ*D", b"ABC"),  # characters outside both alphabets are skipped
        ("QUJ", b"AB"),  # missing padding is fine
        ("QUJDR", b"ABC"),  # a lone trailing character is dropped
        ("-_-_", base64.b64decode("+/+/")),  # url-safe alphabet decodes like the standard one
        ("", b""),
    ],
)
def test_node_base64_decode_matches_node(text: str, expected: bytes) -> None:
    assert node_base64_decode(text) == expected


def test_every_manifest_secret_opens_with_the_fixture_key(trek: TrekCopy) -> None:
    with closing(sqlite3.connect(trek.db)) as conn:
        entries = trek.encrypted_entries()
        assert entries
        for entry in entries:
            scheme = Scheme.MFA if entry["scheme"] == "mfa" else Scheme.API
            assert decrypt_text(stored_value(conn, entry), trek.key, scheme) == entry["plaintext"], entry["table"]


def test_schemes_derive_different_keys() -> None:
    key = Key("same text", "test")
    sealed = Cipher(key, Scheme.MFA).seal(b"JBSWY3DPEHPK3PXP")
    assert Cipher(key, Scheme.MFA).open(sealed) == b"JBSWY3DPEHPK3PXP"
    assert Cipher(key, Scheme.API).open(API_PREFIX + sealed) is None


def test_seal_is_tags_before_ciphertext_with_pinned_iv() -> None:
    key = Key("k", "test")
    sealed = Cipher(key, Scheme.API).seal(b"hello", iv=bytes(12))
    raw = base64.b64decode(sealed[len(API_PREFIX):])
    assert raw[:12] == bytes(12)
    assert len(raw) == 12 + 16 + 5
    # Swapping tag and ciphertext (the layout TREK does not use) must not open.
    swapped = raw[:12] + raw[28:] + raw[12:28]
    assert Cipher(key, Scheme.API).open_sealed(swapped) is None


def test_lenient_spellings_of_a_real_token_still_open() -> None:
    key = Key("k", "test")
    token = encrypt_text("secret value", key, Scheme.API)
    body = token[len(API_PREFIX):]
    variants = [
        body.rstrip("="),  # no padding
        body.replace("+", "-").replace("/", "_"),  # url-safe
        " ".join(body[i:i + 4] for i in range(0, len(body), 4)),  # spaces
        body + "====garbage",
    ]
    for variant in variants:
        assert decrypt_text(API_PREFIX + variant, key, Scheme.API) == "secret value"


@pytest.mark.parametrize("damage", ["truncate", "flip", "not-base64", "short"])
def test_damaged_tokens_do_not_open(damage: str) -> None:
    key = Key("k", "test")
    token = encrypt_text("secret value", key, Scheme.API)
    body = token[len(API_PREFIX):]
    damaged = {
        "truncate": body[:-8],
        "flip": body[:20] + ("A" if body[20] != "A" else "B") + body[21:],
        "not-base64": "!!!!####",
        "short": "QUJD",
    }[damage]
    assert decrypt_text(API_PREFIX + damaged, key, Scheme.API) is None


@given(st.text(), st.sampled_from(list(Scheme)))
def test_round_trip_any_unicode(plaintext: str, scheme: Scheme) -> None:
    key = Key("property key", "test")
    cipher = Cipher(key, scheme)
    data = plaintext.encode("utf-8", errors="surrogatepass")
    assert cipher.open(cipher.seal(data)) == data


@given(st.text(min_size=1), st.text(min_size=1))
def test_wrong_key_never_opens(plaintext: str, other: str) -> None:
    key = Key("the real key", "test")
    wrong = Key("the real key" + other, "test")
    token = Cipher(key, Scheme.API).seal(plaintext.encode("utf-8", errors="surrogatepass"))
    assert Cipher(wrong, Scheme.API).open(token) is None


def test_key_repr_never_shows_the_key() -> None:
    key = Key("super-secret-key-text", "old key from somewhere")
    assert "super-secret" not in repr(key)
    assert "super-secret" not in str(key)
    assert "super-secret" not in repr(Cipher(key, Scheme.API))
    with pytest.raises(KeyProblemError) as raised:
        Key("   ", "an empty source")
    assert "empty" in str(raised.value)


# -- the one primitive: Keyring.reader / Cipher.checked_sealer, used by every path -------------------------

OLD_KEY, NEW_KEY = Key("keyring old key", "old"), Key("keyring new key", "new")


@pytest.mark.parametrize("seed", ["JBSWY3DPEHPK3PXP", "JBSWY3DPEHPK3PXP====", " GEZDGNBVGY3TQOJQ "])
def test_a_plain_totp_seed_reads_as_plaintext_not_as_a_failed_ciphertext(seed: str) -> None:
    keyring = Keyring((OLD_KEY, NEW_KEY))
    assert keyring.read(seed, Scheme.MFA) == (PLAINTEXT, seed.encode())
    assert keyring.open(seed, Scheme.MFA) is None  # it opens under no key: it is no ciphertext


@pytest.mark.parametrize("value", ["not base32 at all!", "jbswy3dpehpk3pxp", "A" * 40])
def test_a_short_or_foreign_mfa_value_that_opens_under_no_key_is_unopened(value: str) -> None:
    # lower case and "!" are outside base32; 40 letters decode to 30 bytes, enough to be a sealed value
    assert Keyring((OLD_KEY,)).read(value, Scheme.MFA) == (UNOPENED, b"")


def test_the_keyring_says_which_key_opens_and_reordering_shares_its_ciphers() -> None:
    keyring = Keyring((OLD_KEY, NEW_KEY))
    under_new = Cipher(NEW_KEY, Scheme.API).seal("héllo 🔐".encode())
    assert keyring.read(under_new, Scheme.API) == (1, "héllo 🔐".encode())
    assert keyring.read("legacy plaintext", Scheme.API) == (PLAINTEXT, b"legacy plaintext")
    assert keyring.read(API_PREFIX + "AAAA" * 12, Scheme.API) == (UNOPENED, b"")
    flipped = keyring.reordered((1, 0))
    assert flipped.read(under_new, Scheme.API) == (0, "héllo 🔐".encode())
    assert flipped.cipher(0, Scheme.MFA) is keyring.cipher(1, Scheme.MFA)  # no second AES-GCM instance per key
    assert flipped.keys == (NEW_KEY, OLD_KEY)
    assert Keyring(()).read(under_new, Scheme.API) == (UNOPENED, b"")


@pytest.mark.parametrize("scheme", list(Scheme))
def test_a_checked_seal_is_what_seal_writes_and_opens_again(scheme: Scheme) -> None:
    cipher = Cipher(NEW_KEY, scheme)
    iv = bytes(range(12))
    assert cipher.seal_checked(b"TOTP seed or token", iv) == cipher.seal(b"TOTP seed or token", iv)
    sealed = cipher.seal_checked(b"random iv")
    assert sealed is not None
    assert Keyring((OLD_KEY, NEW_KEY)).read(sealed, scheme) == (1, b"random iv")


def test_a_checked_seal_refuses_an_iv_trek_could_not_split() -> None:
    # AES-GCM itself accepts an 11-byte IV, but TREK reads the first 12 bytes as the IV: that value would never open.
    assert Cipher(NEW_KEY, Scheme.API).seal_checked(b"secret", bytes(11)) is None


def test_verify_counts_a_plain_totp_seed_in_a_real_database_as_plaintext(trek: TrekCopy) -> None:
    with closing(sqlite3.connect(trek.db)) as conn, conn:
        conn.execute("UPDATE users SET mfa_secret = 'JBSWY3DPEHPK3PXP' WHERE id = (SELECT min(id) FROM users)")
    report = verify_database(trek.db, [trek.key], workers=0)
    mfa = next(loc for loc in report.locations if loc.label == "users.mfa_secret")
    assert report.ok, report.failures
    assert mfa.plaintext == 1
