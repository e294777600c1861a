"""The layering in pyproject.toml's import-linter contracts holds, and a back-edge would be caught."""

from __future__ import annotations

import ast
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


def _copy_with_import(tmp_path: Path, module: str, imported: str) -> Path:
    """A copy of the project where ``module`` (a path under keyrotate/, created if new) also imports ``imported``."""
    shutil.copytree(ROOT / "keyrotate", tmp_path / "keyrotate", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    source = tmp_path / "keyrotate" / module
    before = source.read_text() if source.exists() else '"""A module added by the test."""\n'
    source.write_text(before + f"\nimport {imported}  # noqa: E402,F401\n")
    return tmp_path


def test_a_store_module_importing_the_cli_breaks_the_contract(tmp_path: Path) -> None:
    result = _lint(_copy_with_import(tmp_path, "store/files.py", "keyrotate.cli.app"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "keyrotate.store.files -> keyrotate.cli.app" in result.stdout


def test_a_module_outside_the_layers_importing_the_cli_breaks_the_contract(tmp_path: Path) -> None:
    # Not in any layer, so only the "imported by nothing but __main__" contract can catch it.
    result = _lint(_copy_with_import(tmp_path, "shortcuts.py", "keyrotate.cli.render"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The CLI is imported by nothing but keyrotate.__main__ BROKEN" in result.stdout
    assert "keyrotate.shortcuts -> keyrotate.cli.render" in result.stdout


def test_a_cycle_between_cli_modules_breaks_the_contract(tmp_path: Path) -> None:
    result = _lint(_copy_with_import(tmp_path, "cli/running.py", "keyrotate.cli.app"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No import cycles between sibling modules BROKEN" in result.stdout


MAX_MODULE_LINES = 310  # "about 300": a module over it has grown a second job


def test_every_module_is_small_and_says_its_one_job() -> None:
    problems = []
    for path in sorted((ROOT / "keyrotate").rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        doc = ast.get_docstring(ast.parse(text))
        if lines > MAX_MODULE_LINES:
            problems.append(f"{path.relative_to(ROOT)}: {lines} lines")
        if not doc or not doc.strip():
            problems.append(f"{path.relative_to(ROOT)}: no docstring")
    assert problems == []
