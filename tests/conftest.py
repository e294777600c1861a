"""Shared test helpers: fresh copies of the real TREK fixtures, and manifest checks."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from keyrotate.trek.formats import Scheme
from keyrotate.trek.keys import Key, create_key_file, generate_key_text

from .trek_text import decrypt_text

FIXTURES = Path(__file__).parent / "fixtures"

# pytest --hypothesis-profile=long: the long fuzzing mode (scripts/fuzz_long.sh).
settings.register_profile("long", max_examples=2000)
FIXTURE_NAMES = ("trek-3.0.15", "trek-4.2-shape")


@dataclass
class TrekCopy:
    """A private, writable copy of one fixture's data directory."""

    name: str
    data_dir: Path
    manifest: list[dict[str, Any]]

    @property
    def db(self) -> Path:
        return self.data_dir / "travel.db"

    @property
    def key(self) -> Key:
        return Key((self.data_dir / ".encryption_key").read_text().strip(), f"{self.name} fixture key")

    def encrypted_entries(self) -> list[dict[str, Any]]:
        return [e for e in self.manifest if e["scheme"] in ("api", "mfa")]


def copy_fixture(name: str, destination: Path) -> TrekCopy:
    data_dir = destination / name / "data"
    shutil.copytree(FIXTURES / name / "data", data_dir)
    manifest = json.loads((FIXTURES / name / "manifest.json").read_text())["entries"]
    return TrekCopy(name, data_dir, manifest)


@pytest.fixture(params=FIXTURE_NAMES)
def trek(request: pytest.FixtureRequest, tmp_path: Path) -> TrekCopy:
    return copy_fixture(request.param, tmp_path)


@pytest.fixture
def trek4(tmp_path: Path) -> TrekCopy:
    return copy_fixture("trek-4.2-shape", tmp_path)


@pytest.fixture
def trek3(tmp_path: Path) -> TrekCopy:
    return copy_fixture("trek-3.0.15", tmp_path)


@pytest.fixture
def new_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "new.key"
    create_key_file(path, generate_key_text())
    return path


def stored_value(conn: sqlite3.Connection, entry: dict[str, Any]) -> Any:
    """The raw text TREK stored for a manifest entry (a JSON field when json_path is set)."""
    where = " AND ".join(f'"{k}" = ?' for k in entry["key"])
    row = conn.execute(
        f'SELECT "{entry["column"]}" FROM "{entry["table"]}" WHERE {where}', tuple(entry["key"].values())
    ).fetchone()
    assert row is not None, f"row missing for {entry['table']} {entry['key']}"
    value = row[0]
    for step in entry.get("json_path") or ():
        if isinstance(value, str):
            value = json.loads(value)
        value = value[step]
    return value


def opens_under(conn: sqlite3.Connection, entry: dict[str, Any], key: Key) -> bool:
    scheme = Scheme.MFA if entry["scheme"] == "mfa" else Scheme.API
    return decrypt_text(stored_value(conn, entry), key, scheme) == entry["plaintext"]


def table_dump(db: Path) -> list[str]:
    """Every row of every table, for before/after comparisons."""
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.iterdump())


def listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


@pytest.fixture
def readonly_connection() -> Iterator[Any]:
    opened: list[sqlite3.Connection] = []

    def open_db(db: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(db)
        opened.append(conn)
        return conn

    yield open_db
    for conn in opened:
        conn.close()
