"""The layering in pyproject.toml's import-linter contracts holds, and a back-edge would be caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
)


def _lint(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LINT], cwd=project, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_a_store_module_importing_the_cli_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "keyrotate", tmp_path / "keyrotate", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    files = tmp_path / "keyrotate" / "store" / "files.py"
    files.write_text(files.read_text() + "\nimport keyrotate.cli.app  # noqa: E402,F401\n")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "keyrotate.store.files -> keyrotate.cli.app" in result.stdout
