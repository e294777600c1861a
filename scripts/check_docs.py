#!/usr/bin/env python3
"""Check that the README agrees with the code: exit codes, commands, and the CI command.

Run directly (exits 1 and lists the problems) or through tests/test_docs.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keyrotate.cli.app import main  # noqa: E402
from keyrotate.cli.options import EXIT_CODES_HELP  # noqa: E402
from keyrotate.errors import ExitCode  # noqa: E402


def problems() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    found: list[str] = []
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, flags=re.MULTILINE))
    for code in ExitCode:
        if str(int(code)) not in table:
            found.append(f"README exit-code table lacks {int(code)} ({code.name})")
        if not re.search(rf"(^|\s){int(code)}\s", EXIT_CODES_HELP):
            found.append(f"--help epilog lacks exit code {int(code)} ({code.name})")
    for extra in set(table) - {str(int(c)) for c in ExitCode}:
        found.append(f"README documents exit code {extra}, which the code does not have")
    for command in main.list_commands(click.Context(main)):
        if f"keyrotate {command}" not in readme:
            found.append(f"README never shows `keyrotate {command}`")
    ci_command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                  if line.strip() and not line.startswith(("#", "set ", "cd "))]
    if len(ci_command) != 1 or f"```sh\n{ci_command[0]}\n```" not in readme:
        found.append(".ci/run does not run exactly the README's test command")
    return found


if __name__ == "__main__":
    issues = problems()
    for issue in issues:
        print(issue, file=sys.stderr)
    sys.exit(1 if issues else 0)
