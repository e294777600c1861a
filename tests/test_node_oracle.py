"""Node, TREK's own runtime, as an independent judge of what keyrotate reads and writes.

``tests/node/trek_read.js`` follows TREK's documented read path (key resolution, key
derivation, both ciphertext formats) with Node's own base64 decoder and AES-GCM, so these
tests do not share a line of decoding code with keyrotate. Skipped where Node is missing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from keyrotate.trek.formats import node_base64_decode
from keyrotate.trek.keys import create_key_file, generate_key_text

from .conftest import TrekCopy, stored_value

NODE = shutil.which("node")
READER = Path(__file__).parent / "node" / "trek_read.js"
REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")


def node(payload: dict[str, Any]) -> list[Any]:
    assert NODE is not None
    environment = {k: v for k, v in os.environ.items() if k != "ENCRYPTION_KEY"}
    done = subprocess.run([NODE, str(READER)], input=json.dumps(payload), capture_output=True, text=True,
                          env=environment, check=True, timeout=60)
    answers = json.loads(done.stdout)
    assert isinstance(answers, list)
    return answers


def trek_reads(trek: TrekCopy) -> list[Any]:
    """What TREK, started on this data directory, reads for every manifest entry."""
    with closing(sqlite3.connect(trek.db)) as conn:
        values = [{"stored": stored_value(conn, e), "scheme": "mfa" if e["scheme"] == "mfa" else "api"}
                  for e in trek.manifest if e["scheme"] != "plain"]
    return node({"dataDir": str(trek.data_dir), "values": values})


def expected(trek: TrekCopy) -> list[Any]:
    return [{"plain": e["plaintext"]} for e in trek.manifest if e["scheme"] != "plain"]


def test_node_reads_every_fixture_secret_before_rotation(trek: TrekCopy) -> None:
    assert trek_reads(trek) == expected(trek)


def test_node_reads_every_secret_after_a_cli_rotation(trek: TrekCopy, tmp_path: Path) -> None:
    new_key = tmp_path / "new.key"
    create_key_file(new_key, generate_key_text())
    environment = {k: v for k, v in os.environ.items() if k != "ENCRYPTION_KEY"}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "keyrotate", "rotate", "--data-dir", str(trek.data_dir), "--new-key-file",
         str(new_key), "--quiet"], env=environment, capture_output=True, text=True, check=False, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # TREK starts, resolves its key from the data directory, and reads every secret as before.
    assert trek_reads(trek) == expected(trek)
    with closing(sqlite3.connect(trek.db)) as conn:
        rotated = [stored_value(conn, e) for e in trek.encrypted_entries()]
    assert all(isinstance(v, str) for v in rotated)


def _odd_base64(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_= \n*.é\t"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))


def test_lenient_base64_matches_node_buffer_from() -> None:
    rng = random.Random(20261201)
    samples = [_odd_base64(rng) for _ in range(3000)]
    samples += ["QUJD====QUJD", "QU=JD", "QUJD", "QUJ", "QU", "Q", "", "====", "QUJDRA", "QUJDRA=", "Q-_/+A"]
    assert node({"base64": samples}) == [node_base64_decode(s).hex() for s in samples]
