"""Planning a scan: catalogue x schema -> targets, with the SQL that picks their rows bound, never spliced."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from keyrotate.rotation.reading import read_batches
from keyrotate.rotation.targets import DiscoveryTarget, LocationTarget, plan_targets
from keyrotate.trek.catalogue import Presence, resolve_catalogue
from keyrotate.trek.keys import Key
from keyrotate.trek.sample import build_sample_database
from keyrotate.trek.schema import inspect_database

KEY = Key("targets test key", "test key")


def test_every_active_location_is_a_target_and_discovery_binds_the_catalogued_keys(tmp_path: Path) -> None:
    path = tmp_path / "travel.db"
    build_sample_database(path, KEY, users=2, seed=5)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO settings (user_id, key, value) VALUES (1, 'it''s a note', 'see enc:v1:abc')")
        info = inspect_database(conn, path)
        resolved = resolve_catalogue(info.schema, info.version)
        targets = plan_targets(info, resolved)

        located = [t.location for t in targets if isinstance(t, LocationTarget)]
        assert located == [r.location for r in resolved if r.presence is Presence.ACTIVE]
        settings = next(t for t in targets if isinstance(t, DiscoveryTarget) and t.table == "settings")
        where = settings.where()
        assert "webhook_url" not in where.text and "webhook_url" in where.params
        rows = [row for batch in read_batches(conn, settings) for row in batch]
        assert [row[settings.columns.index("value") + 1] for row in rows] == ["see enc:v1:abc"]
        assert conn.execute(f"SELECT key FROM settings WHERE {where.text}", where.params).fetchall() == [
            ("it's a note",)]


def test_discovery_picks_text_cells_exactly_as_typeof_would(tmp_path: Path) -> None:
    """The search tests a cell for TEXT by comparison (``>= ''`` and ``< X''``), not typeof(): the same rows
    must come out for every storage class in every column affinity, a case-insensitive collation included."""
    path = tmp_path / "travel.db"
    build_sample_database(path, KEY, users=2, seed=5)
    token = "enc:v1:" + "A" * 40
    values: list[object] = [None, 0, 7, -3.5, "", "plain", token, f"note {token}", token.encode(), b"", "ENC:V1:x"]
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE odd (id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT COLLATE NOCASE, "
                     "b BLOB, u, num NUMERIC)")
        columns = ("n", "r", "t", "b", "u", "num")
        for i, value in enumerate(values):
            for j, column in enumerate(columns):
                conn.execute(f"INSERT INTO odd (id, {column}) VALUES (?, ?)", (100 * j + i + 1, value))
        info = inspect_database(conn, path)
        target = next(t for t in plan_targets(info, resolve_catalogue(info.schema, info.version))
                      if isinstance(t, DiscoveryTarget) and t.table == "odd")
        where = target.where()
        found = [r[0] for r in conn.execute(f"SELECT rowid FROM odd WHERE {where.text} ORDER BY rowid", where.params)]
        by_typeof = " OR ".join(f"(typeof({c}) = 'text' AND instr({c}, 'enc:v1:') > 0)" for c in columns)
        expected = [r[0] for r in conn.execute(f"SELECT rowid FROM odd WHERE {by_typeof} ORDER BY rowid")]
    assert found == expected
    assert len(found) == 2 * len(columns)  # the token and the note, as TEXT, in every column


def test_a_column_collation_only_its_application_knows_does_not_stop_the_search(tmp_path: Path) -> None:
    """The TEXT and BLOB tests compare with COLLATE BINARY: a plugin's column declared with a collation that
    only its own application registers (SQLite refuses to compare with one it does not know) is still searched,
    and a stray token there is rotated and found by verify."""
    from keyrotate.rotation.engine import rotate_database
    from keyrotate.rotation.options import RotateOptions
    from keyrotate.rotation.verify import verify_database
    from keyrotate.trek.formats import Cipher, Scheme

    path = tmp_path / "travel.db"
    build_sample_database(path, KEY, users=2, seed=5, release="4.x")
    new = Key("targets test new key", "new test key")
    with closing(sqlite3.connect(path)) as conn:
        conn.create_collation("plugin_order", lambda a, b: (a > b) - (a < b))
        conn.execute("CREATE TABLE plugin_notes (id INTEGER PRIMARY KEY, body TEXT COLLATE plugin_order, "
                     "raw BLOB COLLATE plugin_order)")
        conn.execute("INSERT INTO plugin_notes VALUES (1, ?, NULL)", (Cipher(KEY, Scheme.API).seal(b"plugin secret"),))
        conn.commit()
    for workers in (0, 1):
        before = verify_database(path, [KEY if workers == 0 else new], workers=workers)
        assert before.ok
        report = rotate_database(RotateOptions(path, (KEY if workers == 0 else new,),
                                               new if workers == 0 else KEY, None, workers=workers))
        assert report.committed
        tally = next(loc for loc in report.locations if loc.label.startswith("plugin_notes"))
        assert tally.rewritten == 1
