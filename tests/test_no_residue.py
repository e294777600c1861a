"""After a rotation, no old ciphertext is left anywhere in the database's files.

The backup is the one deliberate copy; it is searched too, to prove the search
finds what it looks for.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.trek.formats import API_PREFIX, Cipher, Scheme, token_spans
from keyrotate.trek.keys import Key

from .conftest import TrekCopy

NEW = Key("residue-test-new-key", "new test key")
CHUNK = 24  # 144 random bits of base64: no false positive, and short enough to sit inside one page


def old_ciphertexts(db: Path, key: Key) -> set[str]:
    """The base64 body of every value that opens under ``key``, wherever it is."""
    api, mfa = Cipher(key, Scheme.API), Cipher(key, Scheme.MFA)
    found = set()
    with closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                for (value,) in conn.execute(f'SELECT "{column}" FROM "{table}" WHERE typeof("{column}") = \'text\''):
                    for token in (value[start:end] for start, end in token_spans(value)):
                        if api.open(token) is not None:
                            found.add(token[len(API_PREFIX):])
                    if mfa.open(value) is not None:
                        found.add(value)
    return found


def chunks(body: str) -> list[bytes]:
    """Pieces of a ciphertext: a long value spills over pages, so it is never whole in the file."""
    return [body[i : i + CHUNK].encode() for i in range(0, len(body) - CHUNK + 1, CHUNK)]


def count_present(ciphertexts: set[str], data: bytes) -> int:
    return sum(1 for body in ciphertexts if any(piece in data for piece in chunks(body)))


def database_files(db: Path) -> list[Path]:
    return [p for p in db.parent.iterdir() if p.name in {db.name, *(db.name + s for s in ("-wal", "-shm", "-journal"))}]


def add_overflowing_secret(trek: TrekCopy) -> None:
    """A secret larger than a page lives in overflow pages."""
    with closing(sqlite3.connect(trek.db)) as conn:
        token = Cipher(trek.key, Scheme.API).seal(("overflow " * 3000).encode())
        conn.execute("UPDATE users SET maps_api_key = ? WHERE id = (SELECT min(id) FROM users)", (token,))
        conn.commit()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_no_old_ciphertext_survives_in_any_database_file(trek: TrekCopy, journal_mode: str) -> None:
    add_overflowing_secret(trek)
    with closing(sqlite3.connect(trek.db)) as conn:
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
    old = old_ciphertexts(trek.db, trek.key)
    assert len(old) > 100
    before = trek.db.read_bytes()
    assert count_present(old, before) == len(old)

    backup = trek.data_dir / "backup.db"
    report = rotate_database(RotateOptions(trek.db, (trek.key,), NEW, backup))
    assert report.committed

    files = database_files(trek.db)
    assert trek.db in files  # the main file is among those scanned
    for path in files:
        assert count_present(old, path.read_bytes()) == 0, f"old ciphertexts left in {path.name}"
    # The backup is the deliberate copy: every old ciphertext is in it, and it opens with the old key.
    assert count_present(old, backup.read_bytes()) == len(old)
    assert old_ciphertexts(backup, trek.key) == old


def test_without_vacuum_stale_copies_remain_and_the_report_says_so(trek4: TrekCopy) -> None:
    """Why --vacuum is the default: secure_delete only zeroes what this run frees, and SQLite
    keeps stale copies of cells in pages it reorganised before (TREK's own database has them)."""
    old = old_ciphertexts(trek4.db, trek4.key)
    report = rotate_database(RotateOptions(trek4.db, (trek4.key,), NEW, None, vacuum=False))
    assert any("--no-vacuum" in w for w in report.warnings)
    assert count_present(old, trek4.db.read_bytes()) > 0
