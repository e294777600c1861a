"""Tables as no TREK release makes them, but a hand, a plugin or a future release might: a column named
rowid, a secret table declared WITHOUT ROWID, a key/value row whose key is NULL, a BLOB beside TEXT tokens.

Each was found by building such a database and running keyrotate on it: a token must never be lost,
rewritten into the wrong row or left under the old key without a word.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from keyrotate.errors import NotTrekError, UndecryptableError
from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key
from keyrotate.trek.sample import build_sample_database

from .conftest import TrekCopy, opens_under

OLD = Key("the old key of the odd-table tests", "old test key")
NEW = Key("the new key of the odd-table tests", "new test key")


def sample(tmp_path: Path) -> Path:
    return build_sample_database(tmp_path / "travel.db", OLD, users=6, seed=5, release="4.x").path


def rotate(db: Path, **kwargs: Any) -> Any:
    return rotate_database(RotateOptions(db, (OLD,), NEW, None, workers=0, **kwargs))


def seal(plaintext: bytes, key: Key = OLD) -> str:
    return Cipher(key, Scheme.API).seal(plaintext)


def opens(value: str, key: Key) -> bytes | None:
    return Cipher(key, Scheme.API).open(value)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_column_named_rowid_blocks_instead_of_rewriting_another_row(tmp_path: Path) -> None:
    """There ``rowid`` names the column: read and written by it, two rows sharing its value 7 both got
    the second row's secret (the first was lost), and a NULL there hid its token."""
    db = sample(tmp_path)
    first, second, third = seal(b"first secret"), seal(b"second secret"), seal(b"third secret")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute('CREATE TABLE "plugin data" ("RowId" INTEGER, "se""cret" TEXT)')
        conn.executemany('INSERT INTO "plugin data" VALUES (?, ?)', [(7, first), (7, second), (None, third)])
        conn.commit()
    with pytest.raises(UndecryptableError) as caught:
        rotate(db)
    message = str(caught.value)
    assert caught.value.exit_code == 8
    assert message.count("plugin data") >= 1 and "a column named rowid" in message
    assert "(_rowid_=1)" in message and "(_rowid_=3)" in message
    assert rotate(db, skip_undecryptable=True).committed  # everything else rotates; these stay as they were
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute('SELECT "RowId", "se""cret" FROM "plugin data" ORDER BY _rowid_').fetchall()
    assert rows == [(7, first), (7, second), (None, third)]
    assert [opens(value, OLD) for _, value in rows] == [b"first secret", b"second secret", b"third secret"]
    after = verify_database(db, [NEW], workers=0)
    assert not after.ok and {f.table for f in after.failures if f.catalogued} == {"plugin data"}


@pytest.mark.parametrize("change", ["without rowid", "rowid column"])
def test_a_secret_table_without_usable_row_ids_is_refused_untouched(tmp_path: Path, change: str) -> None:
    """A catalogued table keyrotate cannot address by rowid: a clear refusal (exit 5), not a traceback."""
    db = sample(tmp_path)
    with closing(sqlite3.connect(db)) as conn:
        if change == "without rowid":
            conn.executescript("""
                CREATE TABLE tokens_copy (plugin_id TEXT NOT NULL, user_id INTEGER NOT NULL, access_token TEXT,
                  refresh_token TEXT, PRIMARY KEY (plugin_id, user_id)) WITHOUT ROWID;
                INSERT INTO tokens_copy SELECT * FROM plugin_oauth_tokens;
                DROP TABLE plugin_oauth_tokens;
                ALTER TABLE tokens_copy RENAME TO plugin_oauth_tokens;""")
        else:
            conn.execute("ALTER TABLE app_settings ADD COLUMN rowid INTEGER")
        conn.commit()
    table = "plugin_oauth_tokens" if change == "without rowid" else "app_settings"
    before = digest(db)
    for run in (lambda: verify_database(db, [OLD], workers=0), lambda: rotate(db)):
        with pytest.raises(NotTrekError) as caught:
            run()
        assert caught.value.exit_code == 5
        assert table in str(caught.value) and "changed nothing" in str(caught.value)
    assert digest(db) == before


def test_a_token_in_a_key_value_row_whose_key_is_null_is_found_and_rotated(tmp_path: Path) -> None:
    """``NOT (key IN (...))`` is NULL for such a row: the search used to skip it, and verify then said OK."""
    db = sample(tmp_path)
    token = seal(b"under a NULL key")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("INSERT INTO app_settings (key, value) VALUES (NULL, ?)", (token,))
        conn.commit()
    report = rotate(db)
    found = [loc for loc in report.locations if loc.label == "app_settings.value (outside the catalogue)"]
    assert [sum(loc.opened_by) for loc in found] == [1]
    with closing(sqlite3.connect(db)) as conn:
        value = conn.execute("SELECT value FROM app_settings WHERE key IS NULL").fetchone()[0]
    assert opens(value, NEW) == b"under a NULL key"


def test_a_blob_token_names_only_its_own_cell(tmp_path: Path) -> None:
    """The TEXT tokens beside a BLOB one are read and rewritten as usual, and never reported as BLOBs."""
    db = sample(tmp_path)
    blob, text = seal(b"maps key as a blob"), seal(b"weather key as text")
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE users SET maps_api_key = ?, openweather_api_key = ? WHERE id = 2", (blob.encode(), text))
        conn.commit()
    with pytest.raises(UndecryptableError) as caught:
        rotate(db)
    assert "users.maps_api_key" in str(caught.value) and "openweather" not in str(caught.value)
    report = rotate(db, skip_undecryptable=True)
    assert [(f.table, f.column) for f in report.failures if f.catalogued] == [("users", "maps_api_key")]
    with closing(sqlite3.connect(db)) as conn:
        maps, weather = conn.execute("SELECT maps_api_key, openweather_api_key FROM users WHERE id = 2").fetchone()
    assert maps == blob.encode() and opens(weather, NEW) == b"weather key as text"


@pytest.mark.parametrize("module", ["fts5", "fts4"])
def test_a_token_in_a_full_text_table_is_named_never_left_unseen(tmp_path: Path, module: str) -> None:
    """Virtual tables and their shadow tables are left alone (only SQLite may change them), but a full-text
    table keeps its own copy of its text: a token there used to stay under the old key without a word."""
    db = sample(tmp_path)
    token = seal(b"pasted into a searchable note")
    with closing(sqlite3.connect(db)) as conn:
        try:
            conn.execute(f"CREATE VIRTUAL TABLE note_search USING {module}(title, body)")
        except sqlite3.OperationalError as exc:
            pytest.skip(f"this SQLite has no {module}: {exc}")
        conn.execute("INSERT INTO note_search (title, body) VALUES ('keys', ?)", (f"the key is {token} for now",))
        conn.commit()
    assert verify_database(db, [OLD], workers=0).ok  # under the key TREK uses: nothing to report
    with pytest.raises(UndecryptableError) as caught:
        rotate(db)
    assert "note_search_content" in str(caught.value) and "full-text search" in str(caught.value)
    assert rotate(db, skip_undecryptable=True).committed
    with closing(sqlite3.connect(db)) as conn:
        body = conn.execute("SELECT body FROM note_search").fetchone()[0]
    assert token in body  # left as it was: rewriting the text behind the index would break the index
    after = verify_database(db, [NEW], workers=0)
    assert not after.ok and {f.table for f in after.failures if f.catalogued} == {"note_search_content"}


def test_names_spelt_in_another_case_are_treks_names(trek3: TrekCopy, tmp_path: Path) -> None:
    """SQLite matches table and column names whatever the case of their ASCII letters, so TREK reads
    ``users.MFA_Secret`` and ``TREK_PHOTOS`` as its own: their secrets used to be missed (the TOTP seeds
    stayed under the old key and ``verify`` said OK) or counted outside the catalogue."""
    with closing(sqlite3.connect(trek3.db)) as conn:
        conn.execute("ALTER TABLE users RENAME COLUMN mfa_secret TO MFA_Secret")
        conn.execute("ALTER TABLE trek_photos RENAME TO photos_for_a_moment")
        conn.execute("ALTER TABLE photos_for_a_moment RENAME TO TREK_PHOTOS")
        conn.commit()
    entries = trek3.encrypted_entries()
    before = verify_database(trek3.db, [trek3.key], workers=0)
    assert before.ok and before.catalogued_tokens == len(entries)
    assert not [loc for loc in before.locations if not loc.catalogued and loc.tokens]
    report = rotate_database(RotateOptions(trek3.db, (trek3.key,), NEW, tmp_path / "backup.db", workers=0))
    assert report.rotated == len(entries)
    with closing(sqlite3.connect(trek3.db)) as conn:
        assert [e["column"] for e in entries if not opens_under(conn, e, NEW)] == []


def test_a_marker_table_without_its_version_column_counts_as_no_marker(trek4: TrekCopy) -> None:
    """``schema_version`` without a ``version`` column: the release is read from the tables, as for an
    empty marker table, instead of every command stopping at "no such column: version"."""
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("ALTER TABLE schema_version RENAME COLUMN version TO ver")
        conn.commit()
    report = verify_database(trek4.db, [trek4.key], workers=0)
    assert report.ok and "no schema_version" in report.trek_version


def test_plugin_secret_fields_without_a_scope_column_are_instance_fields(trek4: TrekCopy, tmp_path: Path) -> None:
    """Before per-user plugin settings a field had no scope: the list still says which plugin config fields are
    secret (instead of every command stopping at "no such column: scope"), and they rotate as before."""
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.execute("ALTER TABLE plugin_settings_fields DROP COLUMN scope")
        conn.commit()
    plugin_entries = [e for e in trek4.encrypted_entries() if e["table"] == "plugins"]
    assert plugin_entries
    report = rotate_database(RotateOptions(trek4.db, (trek4.key,), NEW, tmp_path / "backup.db", workers=0))
    labels = {loc.label: loc for loc in report.locations if loc.table == "plugins"}
    assert [label for label, loc in labels.items() if not loc.catalogued and loc.tokens] == []
    with closing(sqlite3.connect(trek4.db)) as conn:
        assert [e["key"] for e in plugin_entries if not opens_under(conn, e, NEW)] == []
