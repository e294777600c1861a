"""The one boundary every command runs through: stderr messages, and library errors turned into exit codes."""

from __future__ import annotations

import io
import json
import os
import select
import stat
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import NoReturn, TextIO

import click

from keyrotate import interrupts
from keyrotate.cli.interrupted import stopped_before_commit
from keyrotate.cli.printable import printable
from keyrotate.errors import ExitCode, KeyrotateError
from keyrotate.rotation.report import SCHEMA_VERSION


def say(message: str, *, quiet: bool = False) -> None:
    """A line for the person at the terminal, on stderr; nothing with --quiet.

    When whoever read stderr has gone (``2>&1 | head``), the lines have nowhere to go but the work goes on: a
    rotation past its COMMIT must still re-encrypt the backup ZIPs and replace .jwt_secret as asked.
    """
    if not quiet and not quiet_requested():
        try:  # file and table names come from the data directory: no control character gets through
            click.echo("\n".join(printable(line) for line in message.split("\n")), err=True)
        except BrokenPipeError:
            _to_devnull(sys.stderr)


def quiet_requested() -> bool:
    """The running command was given --quiet: stderr then carries errors only, warnings included."""
    context = click.get_current_context(silent=True)
    return context is not None and bool(context.params.get("quiet"))


def warn(message: str) -> None:
    say(f"WARNING: {message}")


ERROR_DOCUMENT = "keyrotate.error_document"  # click context meta: members a failing --json run adds to its document


def add_to_error_document(**members: object) -> None:
    """Members the JSON document of this run carries if it fails (rotate --incident: its leak checklist)."""
    context = click.get_current_context(silent=True)
    if context is not None:
        context.meta.setdefault(ERROR_DOCUMENT, {}).update(members)


def fail(error: KeyrotateError) -> NoReturn:
    # Messages name tables, rows and paths found in the database: no control character gets through.
    click.echo("Error: " + "\n".join(printable(line) for line in error.message.split("\n")), err=True)
    context = click.get_current_context(silent=True)
    if context is not None and context.params.get("json_output"):
        # A script that asked for JSON gets a document on stdout for a failure too (commands with --json write
        # their report only once they succeed, so stdout is still empty here).
        extra = context.meta.get(ERROR_DOCUMENT, {})
        document = {"schema_version": SCHEMA_VERSION, "command": context.info_name, **extra, "error": error.to_json()}
        try:
            click.echo(json.dumps(document, default=str))
        except OSError as exc:  # stdout on a full disk: the message above stands, the exit code too
            stdout_lost(exc)
    sys.exit(int(error.exit_code))


def stdout_lost(exc: OSError) -> None:
    """stdout cannot be written (a full disk under `> report.txt`): say so on stderr, and send what is left for
    it nowhere, so the exit does not fail a second time (a traceback, exit 120) when Python flushes it."""
    with suppress(OSError, ValueError):
        click.echo(f"Error: the report could not be written to standard output ({exc.strerror or exc}).", err=True)
    _to_devnull(sys.stdout)


def run(action: Callable[[], int]) -> NoReturn:
    """One boundary for every command: library errors become messages and exit codes."""
    previous = interrupts.install()  # SIGTERM and SIGHUP unwind like Ctrl-C: every finally runs
    try:
        code = action()
    except KeyrotateError as error:
        fail(error)
    except KeyboardInterrupt as interrupt:  # commands that write turn this into what they had done
        fail(stopped_before_commit(interrupt))
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        _to_devnull(sys.stdout)
        sys.exit(int(ExitCode.STDOUT_CLOSED))
    except OSError as error:
        # Reported by kind only: paths are safe, but keep keyrotate's rule of no raw payloads.
        click.echo(f"Error: {error.strerror or type(error).__name__} ({getattr(error, 'filename', '') or ''})", err=True)
        sys.exit(int(ExitCode.CANNOT_WRITE))
    finally:
        interrupts.restore(previous)
    sys.exit(code)


def _stdout_gone() -> bool:
    """stdout is a pipe or socket nobody reads any more (``keyrotate exposure | head`` once head has exited)."""
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode) and not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _to_devnull(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what is still buffered for it must not fail again."""
    with suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
