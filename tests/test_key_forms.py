"""A key file whose exact text is the key: TREK ran with ENCRYPTION_KEY='KEY ' (used as is, written as is into
data/.encryption_key), so the secrets are under "KEY " while TREK's trimmed reading of the file gives "KEY".

Audit G, defect 1: `exposure` said "0 secrets readable" of such a data directory, though whoever copied the file
holds the exact text. Real SQLite, real AES-GCM, the real CLI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keyrotate.cli.app import main
from keyrotate.errors import ExitCode
from keyrotate.trek.keys import Key, generate_key_text, key_from_file, resolve_trek_key
from keyrotate.trek.sample import build_sample_database

from .conftest import table_dump

KEY = generate_key_text()


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


@pytest.fixture
def spaced(tmp_path: Path) -> tuple[Path, int]:
    """A data directory TREK started with ENCRYPTION_KEY='KEY ' wrote: every secret under "KEY ", the file as is."""
    data = tmp_path / "data"
    data.mkdir()
    sample = build_sample_database(data / "travel.db", Key(KEY + " ", "env key"), users=6, seed=3, release="4.x")
    (data / ".encryption_key").write_bytes((KEY + " ").encode())
    return data, sample.count


def assert_no_key(result: Result) -> None:
    assert KEY not in result.stdout + result.stderr


def test_a_key_file_keeps_its_exact_text_only_when_trimming_drops_more_than_a_line_break(tmp_path: Path) -> None:
    for content, exact in ((KEY, None), (KEY + "\n", None), (KEY + "\r\n", None), (KEY + " ", KEY + " "),
                           ("\ufeff" + KEY, "\ufeff" + KEY), (KEY + " \n", KEY + " \n"), (KEY + "\r", KEY + "\r")):
        path = tmp_path / "key"
        path.write_bytes(content.encode())
        key, _ = key_from_file(path, "test")
        assert key.reveal() == KEY  # what TREK reads from the file: unchanged
        other = key.untrimmed()
        assert (other.reveal() if other else None) == exact, repr(content)
        assert KEY not in repr(key) and (other is None or KEY not in repr(other))
        (tmp_path / ".encryption_key").write_bytes(content.encode())
        resolved = resolve_trek_key(tmp_path).key
        assert resolved.reveal() == KEY and (resolved.untrimmed() is None) == (exact is None)


@pytest.mark.parametrize("given", ["data-dir", "key-file"])
def test_exposure_tries_the_key_files_exact_text_and_says_which_form_opened(spaced: tuple[Path, int],
                                                                           given: str) -> None:
    data, total = spaced
    keys = ["--data-dir", str(data)] if given == "data-dir" else ["--db", str(data / "travel.db"), "--key-file",
                                                                   str(data / ".encryption_key")]
    result = invoke(["exposure", *keys, "--no-copies"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Secrets readable with the suspected key: {total} (")
    assert "(untrimmed)." in result.stdout.splitlines()[0]
    warning = " ".join(result.stderr.split())
    assert f"Its exact text, untrimmed, opens {total} secret(s) the trimmed key does not" in warning
    assert_no_key(result)


def test_a_key_file_ending_in_one_line_break_adds_no_form(spaced: tuple[Path, int]) -> None:
    """How editors, echo and keyrotate write a key file: nothing to try beside what TREK reads."""
    data, _ = spaced
    (data / ".encryption_key").write_text(KEY + "\n")
    result = invoke(["exposure", "--data-dir", str(data), "--no-copies", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert "untrimmed" not in result.stdout + result.stderr


def test_verify_says_the_untrimmed_text_opens_them_and_what_to_do(spaced: tuple[Path, int]) -> None:
    data, _ = spaced
    result = invoke(["verify", "--data-dir", str(data)])
    assert result.exit_code == ExitCode.VERIFY_FAILED
    message = " ".join(result.stderr.split())
    total = int(re.findall(r"opens 0 of (\d+) catalogued secrets", message)[0])
    assert f"Untrimmed, the exact text of the key file (the key TREK uses from {data}) opens {total} catalogued" in message
    assert "TREK must be given the key as it uses it: keep ENCRYPTION_KEY in TREK's environment exactly" in message
    assert_no_key(result)
    exact = invoke(["verify", "--db", str(data / "travel.db"), "--key-env", "TREKKEY"], env={"TREKKEY": KEY + " "})
    assert exact.exit_code == 0 and "Untrimmed" not in exact.stderr


def test_rotate_refuses_with_the_hint_and_incident_lists_what_the_exact_text_opens(spaced: tuple[Path, int],
                                                                                 tmp_path: Path) -> None:
    data, exposed = spaced
    new = tmp_path / "new.key"
    new.write_text(generate_key_text() + "\n")
    before = table_dump(data / "travel.db")
    result = invoke(["rotate", "--data-dir", str(data), "--new-key-file", str(new), "--yes", "--incident"])
    assert result.exit_code == ExitCode.WRONG_KEY
    message = " ".join(result.stderr.split())
    assert "opens 0 of" in message
    hint = f"Untrimmed, the exact text of the key file (old key from {data / '.encryption_key'}) opens "
    assert int(message.split(hint)[1].split(" ")[0]) > 0
    assert "give the old key with --old-key-env NAME, NAME holding that exact text" in message
    assert "ROTATION FAILED (exit 7)" in result.stdout
    assert f"Secrets readable with the suspected key: {exposed} (" in result.stdout
    assert_no_key(result)
    assert table_dump(data / "travel.db") == before
    exact = invoke(["rotate", "--data-dir", str(data), "--old-key-env", "TREKKEY", "--new-key-file", str(new), "--yes"],
                   env={"TREKKEY": KEY + " "})
    assert exact.exit_code == 0, exact.stderr
    assert invoke(["verify", "--data-dir", str(data)]).exit_code == 0
