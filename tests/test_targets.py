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
