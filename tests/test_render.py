"""cli/render.py: one renderer for every command's report, the same bytes whether streamed or rendered whole."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from keyrotate.cli.app import main
from keyrotate.cli.render import FORMATS, render
from keyrotate.operations.audit import audit_database
from keyrotate.operations.exposure import find_exposure
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key, key_from_file

from .conftest import TrekCopy


def _key(trek: TrekCopy, label: str) -> Key:
    """The fixture's key as the command reads it from --key-file (the reports name where it came from)."""
    return key_from_file(trek.data_dir / ".encryption_key", label)[0]


def _stdout(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_verify_json_is_the_report_rendered(trek4: TrekCopy) -> None:
    expected = render(verify_database(trek4.db, [_key(trek4, "verify")]), "json")
    assert _stdout(["verify", "--db", str(trek4.db), "--key-file", str(trek4.data_dir / ".encryption_key"),
                    "--json"]) == expected + "\n"


@pytest.mark.parametrize("fmt", FORMATS)
def test_audit_in_every_format_is_the_report_rendered(trek4: TrekCopy, fmt: str) -> None:
    assert _stdout(["audit", "--db", str(trek4.db), "--format", fmt]) == render(audit_database(trek4.db), fmt) + "\n"


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_exposure_is_the_report_rendered_whole(trek4: TrekCopy, fmt: str) -> None:
    # The exposure command writes records while its pass runs; render() gets the report with its secrets kept.
    whole = render(find_exposure(trek4.db, [_key(trek4, "suspected")], check_copies=False), fmt)
    streamed = _stdout(["exposure", "--db", str(trek4.db), "--key-file", str(trek4.data_dir / ".encryption_key"),
                        "--no-copies", "--format", fmt])
    assert streamed == whole + "\n"


def test_a_report_without_that_form_and_an_unknown_format_are_refused(trek4: TrekCopy) -> None:
    report = verify_database(trek4.db, [trek4.key])
    with pytest.raises(ValueError, match="a VerifyReport has no csv form"):
        render(report, "csv")
    with pytest.raises(ValueError, match="unknown format 'yaml'"):
        render(report, "yaml")
