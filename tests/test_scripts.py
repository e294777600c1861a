"""The helper programs in scripts/ still run against the package as it is (they import its internals)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("ENCRYPTION_KEY", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.parametrize("script", ["benchmark.py", "perf_experiments.py", "make_trek_db.py"])
def test_script_starts(script: str) -> None:
    done = _run(str(SCRIPTS / script), "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_filler_rows_hold_no_secret_and_every_secret_still_opens(tmp_path: Path) -> None:
    done = _run(str(SCRIPTS / "make_trek_db.py"), "--users", "6", "--filler", "2", "--out", str(tmp_path / "db"))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    db = tmp_path / "db" / "data" / "travel.db"
    with closing(sqlite3.connect(db)) as conn:
        filler = sum(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("places", "photos", "day_notes"))
    assert info["filler_rows"] == round(2 * info["secrets"])
    assert abs(filler - info["filler_rows"]) < 3  # split evenly over three tables
    verify = _run("-m", "keyrotate", "verify", "--db", str(db), "--key-file",
                  str(tmp_path / "db" / "data" / ".encryption_key"), "--json")
    assert verify.returncode == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert not any(loc["table"] in ("places", "photos", "day_notes") for loc in report["locations"])


def test_benchmark_measures_floor_rotate_and_verify(tmp_path: Path) -> None:
    done = _run(str(SCRIPTS / "benchmark.py"), "--secrets", "300", "--runs", "1", "--filler", "0", "1",
                "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    table, _, rest = done.stdout.partition("\n[")
    results = json.loads("[" + rest)
    assert [r["filler"] for r in results] == [0.0, 1.0]
    for result in results:
        assert result["secrets"] > 250
        assert result["floor_secrets"] > 0
        assert result["keyrotate"]["peak_rss_mb"] > 10
        assert result["keyrotate"]["min"] <= result["keyrotate"]["median"] <= result["keyrotate"]["max"]
    assert "| filler 1," in table
    assert len(list(tmp_path.glob("db-300-seed0-filler*"))) == 2  # cached by parameters
