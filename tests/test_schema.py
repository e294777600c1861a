"""trek/schema.py: which tables keyrotate reads (PRAGMA table_list, or the CREATE statements on SQLite before 3.37),
their columns and rowids (SQLite's PRAGMAs, the same answer as sqlite-utils'), read without changing the connection,
on copies of the real fixtures."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from keyrotate.rotation.engine import rotate_database
from keyrotate.rotation.options import RotateOptions
from keyrotate.store.database import connect
from keyrotate.trek.formats import Cipher, Scheme
from keyrotate.trek.keys import Key
from keyrotate.trek.schema import (
    declares_without_rowid,
    fold_name,
    inspect_database,
    kinds_from_create_statements,
    kinds_from_table_list,
)

from .conftest import TrekCopy

NEW = Key("a-new-key-for-the-schema-tests-0123456789", "new test key")


def add_tables(trek: TrekCopy) -> str:
    """An FTS5 index (virtual, with shadow tables), a WITHOUT ROWID table, and an ordinary table whose SQL
    merely contains the words WITHOUT ROWID. The last two hold a token under the fixture's key; the last one's is
    returned. (A token in the index's text would block a rotation: tests/test_odd_tables.py.)"""
    token = Cipher(trek.key, Scheme.API).seal(b"a webhook secret")
    with closing(sqlite3.connect(trek.db)) as conn:
        conn.execute("CREATE VIRTUAL TABLE note_search USING fts5(body)")
        conn.execute("INSERT INTO note_search (body) VALUES ('an indexed note')")
        conn.execute("CREATE TABLE sync_state (name TEXT PRIMARY KEY, state TEXT) WITHOUT ROWID")
        conn.execute("CREATE TABLE hooks (id INTEGER PRIMARY KEY, secret TEXT, mode TEXT DEFAULT 'WITHOUT ROWID')")
        conn.execute("INSERT INTO hooks (secret) VALUES (?)", (token,))
        conn.commit()
    return token


def test_virtual_and_shadow_tables_are_left_out_and_without_rowid_comes_from_sqlite(trek4: TrekCopy) -> None:
    add_tables(trek4)
    with closing(connect(trek4.db)) as conn:
        info = inspect_database(conn, trek4.db)
    assert not [t for t in info.schema if t.startswith("note_search") or t.startswith("sqlite_")]
    assert info.index_content == {"note_search_content": ("id", "c0")}  # the index's own copy of its text
    assert info.without_rowid == {"sync_state"}
    assert info.schema["hooks"] == ("id", "secret", "mode")
    assert list(info.schema)[-2:] == ["sync_state", "hooks"]  # in the order the tables were created


def test_only_an_integer_primary_key_counts_as_a_rowid_vacuum_keeps(trek4: TrekCopy) -> None:
    """SQLite's documented condition: VACUUM may renumber any table without an explicit INTEGER PRIMARY KEY."""
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.executescript(
            'CREATE TABLE alias_a ("Id" integer PRIMARY KEY, v); CREATE TABLE alias_b (v, id INTEGER, PRIMARY KEY (id DESC));'
            "CREATE TABLE loose_desc (id INTEGER PRIMARY KEY DESC, v); CREATE TABLE loose_int (id INT PRIMARY KEY, v);"
            "CREATE TABLE loose_text (k TEXT PRIMARY KEY, v); CREATE TABLE loose_pair (a INTEGER, b, PRIMARY KEY (a, b));"
            "CREATE TABLE loose_none (v); CREATE TABLE loose_wr (id INTEGER PRIMARY KEY, v) WITHOUT ROWID;")
    with closing(connect(trek4.db)) as conn:
        info = inspect_database(conn, trek4.db)
    assert {"alias_a", "alias_b", "users"} <= info.rowid_alias
    assert not {t for t in info.rowid_alias if t.startswith("loose_")}


def test_the_schema_is_what_sqlite_utils_reads(trek4: TrekCopy) -> None:
    """inspect_database reads tables and columns with PRAGMAs of its own (issue 11: sqlite-utils' import cost every
    command 40-80 ms); sqlite-utils, still a dependency, reads the same file as the oracle: same tables in the same
    order, same columns, same rowid aliases, odd names and every kind of primary key included."""
    from sqlite_utils import Database

    add_tables(trek4)
    add_odd_tables(trek4.db)
    with closing(sqlite3.connect(trek4.db)) as conn:
        conn.executescript(
            'CREATE TABLE "we""ird ]name" ("a ""b" INTEGER PRIMARY KEY, [c d] TEXT, e GENERATED ALWAYS AS ([c d]) VIRTUAL);'
            "CREATE TABLE alias_b (v, id INTEGER, PRIMARY KEY (id DESC)); CREATE TABLE loose_desc (id INTEGER PRIMARY "
            "KEY DESC, v); CREATE TABLE loose_pair (a INTEGER, b, PRIMARY KEY (a, b)); CREATE TABLE loose_none (v);")
        with closing(connect(trek4.db)) as ours:  # a temporary table of the same name hides main's from a bare PRAGMA
            ours.execute("CREATE TEMP TABLE users (shadowing_main INTEGER PRIMARY KEY DESC)")
            info = inspect_database(ours, trek4.db)
        kinds = kinds_from_table_list(conn)
        assert kinds is not None
        oracle = [t for t in Database(conn).tables if t.name not in kinds.left_out and not t.name.startswith("sqlite_")]
        # Names that could be TREK's are folded to lower case, as SQLite compares them; others stay as written.
        assert list(info.schema.items()) == [(fold_name(t.name), tuple(fold_name(c.name) for c in t.columns))
                                             for t in oracle]
        expected_alias = {fold_name(t.name) for t in oracle if t.name not in kinds.without_rowid
                          and [c.type.upper() for c in t.columns if c.is_pk] == ["INTEGER"]
                          and not [i for i in t.indexes if i.origin == "pk"]}
    assert info.rowid_alias == expected_alias
    assert {'we"ird ]name', "alias_b", "users", "hooks"} <= info.rowid_alias
    assert not {"loose_desc", "loose_pair", "loose_none", "sync_state"} & info.rowid_alias
    assert info.schema['we"ird ]name'] == ('a "b', "c d")  # a generated column is not stored: no secret there


def test_sqlite_before_3_37_reads_the_same_schema(trek4: TrekCopy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PRAGMA table_list the kinds come from the CREATE statements; the rest of the reading is the same."""
    import keyrotate.trek.schema as schema

    add_tables(trek4)
    add_odd_tables(trek4.db)
    with closing(connect(trek4.db)) as conn:
        listed = inspect_database(conn, trek4.db)
        monkeypatch.setattr(schema, "kinds_from_table_list", lambda conn: None)
        read = inspect_database(conn, trek4.db)
    assert read == listed
    assert "hooks" in read.rowid_alias and read.without_rowid == {"sync_state", "strict_keys", 'odd "name"'}


def test_a_table_whose_sql_mentions_without_rowid_is_rotated(trek4: TrekCopy, tmp_path: Path) -> None:
    token = add_tables(trek4)
    report = rotate_database(RotateOptions(trek4.db, (trek4.key,), NEW, backup_path=None, workers=0))
    assert report.committed and report.verified_after_commit
    with closing(sqlite3.connect(trek4.db)) as conn:
        [stored] = conn.execute("SELECT secret FROM hooks").fetchone()
    assert stored != token
    assert Cipher(NEW, Scheme.API).open(stored) == b"a webhook secret"


def add_odd_tables(db: Path) -> None:
    """More of what the CREATE statements must be read for: other virtual modules, WITHOUT ROWID written every
    way SQLite accepts it, names that look like shadow tables but are not."""
    with closing(sqlite3.connect(db)) as conn:
        for sql in (
            "CREATE VIRTUAL TABLE \"Trip Search\" USING FTS4(title, notes)",
            "CREATE VIRTUAL TABLE places_box USING rtree(id, min_x, max_x)",
            "CREATE TABLE note_search_extra (id INTEGER PRIMARY KEY, secret TEXT)",  # not a suffix FTS5 uses
            "CREATE TABLE \"Trip Search_notes\" (secret TEXT)",  # nor FTS4
            "CREATE TABLE strict_keys (k TEXT PRIMARY KEY, v TEXT) STRICT, without rowid",
            "CREATE TABLE [odd \"name\"] (k INTEGER PRIMARY KEY, v) /* options: */ WiThOuT\n  RowId",
            "CREATE TABLE commented (k PRIMARY KEY, v) -- WITHOUT ROWID",
        ):
            conn.execute(sql)
        conn.commit()


def test_the_create_statements_give_what_table_list_gives(trek4: TrekCopy) -> None:
    """The fallback for SQLite before 3.37, run on the same file as PRAGMA table_list."""
    add_tables(trek4)
    add_odd_tables(trek4.db)
    with closing(connect(trek4.db)) as conn:
        listed = kinds_from_table_list(conn)
        read = kinds_from_create_statements(conn)
        info = inspect_database(conn, trek4.db)
    assert listed is not None
    assert read == listed
    assert listed.without_rowid == {"sync_state", "strict_keys", 'odd "name"'}
    shadows = {"note_search_data", "note_search_idx", "note_search_content", "note_search_docsize",
               "note_search_config", "Trip Search_content", "Trip Search_segments", "Trip Search_segdir",
               "Trip Search_docsize", "Trip Search_stat", "places_box_node", "places_box_parent", "places_box_rowid"}
    assert listed.left_out == {"note_search", "Trip Search", "places_box"} | shadows
    assert listed.index_content == {"note_search_content", "Trip Search_content"}  # rtree keeps no text
    assert {"note_search_extra", "Trip Search_notes", "hooks", "commented"} <= info.schema.keys()  # not TREK-like
    assert not info.schema.keys() & {fold_name(name) for name in listed.left_out}


def test_both_ways_agree_on_the_fixtures(trek: TrekCopy) -> None:
    with closing(connect(trek.db)) as conn:
        listed = kinds_from_table_list(conn)
        assert listed is not None and kinds_from_create_statements(conn) == listed
        assert not listed.left_out and not listed.without_rowid


@pytest.mark.parametrize(("sql", "without_rowid"), [
    ("CREATE TABLE t (k TEXT PRIMARY KEY) WITHOUT ROWID", True),
    ("create table t (k text primary key) strict,without rowid", True),
    ("CREATE TABLE t (k TEXT PRIMARY KEY) WITHOUT /* ) */ ROWID", True),
    ("CREATE TABLE t (k, mode TEXT DEFAULT 'WITHOUT ROWID')", False),
    ("CREATE TABLE \"x) WITHOUT ROWID\" (k)", False),
    ("CREATE TABLE t (k PRIMARY KEY) /* ) WITHOUT ROWID */", False),
    ("CREATE TABLE t (k TEXT PRIMARY KEY) STRICT", False),
])
def test_without_rowid_is_an_option_after_the_columns(sql: str, without_rowid: bool) -> None:
    assert declares_without_rowid(sql) is without_rowid
    with closing(sqlite3.connect(":memory:")) as conn:  # and SQLite agrees
        conn.execute(sql)
        [wr] = conn.execute("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
                            "AND name NOT LIKE 'sqlite%'").fetchone()
    assert bool(wr) is without_rowid


def test_reading_the_schema_leaves_the_connection_as_it_was(trek4: TrekCopy) -> None:
    """sqlite-utils reads the schema on keyrotate's own connection: no pragma changed, nothing begun or committed."""
    with closing(connect(trek4.db)) as conn:
        state = [conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("recursive_triggers", "foreign_keys")]
        assert state == [0, 1]
        inspect_database(conn, trek4.db)
        assert [conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("recursive_triggers", "foreign_keys")] == state
        assert not conn.in_transaction and conn.isolation_level is None

        conn.execute("BEGIN")
        conn.execute("CREATE TABLE scratch (x)")
        inspect_database(conn, trek4.db)
        assert conn.in_transaction
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'").fetchone()[0] == 0


@pytest.mark.parametrize("command", [["--help"], ["generate-key"], ["verify", "--quiet"]])
def test_commands_do_not_import_sqlite_utils(command: list[str], trek4: TrekCopy) -> None:
    """Its import costs start-up time (40-80 ms); only SQLite before 3.37 needs it (trek.schema.introspect)."""
    args = [*command, "--data-dir", str(trek4.data_dir)] if command[0] == "verify" else command
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "keyrotate", *args],
                         capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "click" in imported
    assert "sqlite_utils" not in imported


def test_the_cli_reads_a_schema_without_importing_numpy(trek4: TrekCopy) -> None:
    """sqlite_utils imports numpy whenever it is installed; the CLI's own process keeps it out (keyrotate.__main__),
    also where it reads the CREATE statements with sqlite-utils (SQLite before 3.37, as if PRAGMA table_list failed)."""
    pytest.importorskip("numpy")  # only where numpy is installed can this fail
    code = ("import atexit, runpy, sys; import keyrotate.trek.schema as schema; "
            "schema.kinds_from_table_list = lambda conn: None; "
            "atexit.register(lambda: print('imported', sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlite_utils', 'numpy', 'pandas') and sys.modules[m] is not None), file=sys.stderr)); "
            f"sys.argv = ['keyrotate', 'verify', '--data-dir', {str(trek4.data_dir)!r}, '--quiet']; "
            "runpy.run_module('keyrotate', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    [listed] = [line for line in run.stderr.splitlines() if line.startswith("imported")]
    assert "'sqlite_utils'" in listed
    assert "numpy" not in listed and "pandas" not in listed


def test_a_library_user_can_still_import_numpy_after_reading_a_schema(trek4: TrekCopy) -> None:
    """Only the CLI's process keeps numpy out: ``import keyrotate`` changes nothing for its host."""
    pytest.importorskip("numpy")
    code = ("import sys, keyrotate.store.database as d, keyrotate.trek.schema as s; from pathlib import Path; "
            f"s.inspect_database(d.connect(Path({str(trek4.db)!r})), Path({str(trek4.db)!r})); "
            "import numpy, sqlite_utils.db; assert sqlite_utils.db.np is numpy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_hashes_without_loading_openssl_twice(trek4: TrekCopy) -> None:
    """hashlib's OpenSSL (_hashlib, 3.5 MB) stays out of the CLI's process: its hashes are Python's own (issue 11)."""
    code = ("import atexit, runpy, sys; "
            "atexit.register(lambda: print('hashlib', 'hashlib' in sys.modules, sys.modules.get('_hashlib'), "
            "file=sys.stderr)); "
            f"sys.argv = ['keyrotate', 'verify', '--data-dir', {str(trek4.data_dir)!r}, '--quiet']; "
            "runpy.run_module('keyrotate', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "hashlib True None" in run.stderr
