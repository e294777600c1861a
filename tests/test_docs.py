"""The README must keep telling the truth about the code."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_docs.py"


def test_readme_matches_the_code() -> None:
    spec = importlib.util.spec_from_file_location("check_docs", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.problems() == []


def test_the_documented_rekey_command_takes_every_zip_trek_writes() -> None:
    """TREK names its ZIPs backup-*.zip (by hand) and auto-backup-*.zip (scheduled): the README's command takes both."""
    readme = (SCRIPT.parent.parent / "README.md").read_text()
    globs = re.findall(r"keyrotate rekey-backup (\S+\.zip) ", readme)
    assert globs
    for pattern in globs:
        for name in ("backup-2026-03-14T02-30-00.zip", "auto-backup-2026-03-15T03-00-00.zip"):
            assert fnmatch.fnmatch(f"data/backups/{name}", pattern), (pattern, name)
