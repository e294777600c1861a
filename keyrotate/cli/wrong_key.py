"""What a key that opens nothing may mean: the hints added to rotate's exit 7 (and verify's failure), each checked on
the database."""

from __future__ import annotations

import shlex
from pathlib import Path

from keyrotate.cli.key_forms import untrimmed_opens, with_other_forms
from keyrotate.cli.rotate_args import RotationRun
from keyrotate.errors import KeyrotateError, WrongKeyError
from keyrotate.trek.keys import Key, key_from_file


def wrong_key_hints(error: KeyrotateError, rotation: RotationRun) -> KeyrotateError:
    """``error`` with what a wrong old key (exit 7) may mean, when the database says so; any other error as it is."""
    if not isinstance(error, WrongKeyError):
        return error
    return _other_form_hint(_session_secret_hint(error, rotation), rotation)


def untrimmed_key_hint(key: Key, db_path: Path, wait: float) -> str | None:
    """verify's: the first key was read trimmed from a key file whose exact text opens the secrets (TREK given
    ENCRYPTION_KEY with whitespace at an end): the sentence saying so and what to do, else None."""
    other = key.untrimmed()
    opened = _opened_by(other, db_path, wait) if other is not None else 0
    return untrimmed_opens(key, opened, in_use=True) if opened else None


def _opened_by(key: Key, db_path: Path, wait: float) -> int:
    """How many catalogued secrets ``key`` opens (0 when the database cannot be read again)."""
    from keyrotate.rotation.verify import verify_database  # this failure only

    try:
        return verify_database(db_path, [key], busy_timeout=wait, workers=0).opened_by_first
    except (KeyrotateError, OSError):
        return 0


def _session_secret_hint(error: WrongKeyError, rotation: RotationRun) -> WrongKeyError:
    """An install that has been encrypting with its session secret (TREK's fallback for installs older than
    April 2026, TREK-FORMAT.md section 2): say so when .jwt_secret beside the database opens the secrets."""
    jwt = rotation.path.parent / ".jwt_secret"
    if not jwt.is_file():
        return error
    try:
        key, _ = key_from_file(jwt, "session secret")
    except (KeyrotateError, OSError):
        return error
    if any(key.same_secret_as(old) for old in rotation.keys.old):
        return error
    opened = _opened_by(key, rotation.path, rotation.args.wait)
    if not opened:
        return error
    return WrongKeyError(f"{error.message}\n{jwt} opens {opened} of them: this install has been encrypting with its "
                         "session secret (TREK's fallback for installs made before April 2026). Give it as the old key: "
                         f"--old-key-file {shlex.quote(str(jwt))}")


def _other_form_hint(error: WrongKeyError, rotation: RotationRun) -> WrongKeyError:
    """The other form of an old key opens the secrets. An old key typed or pasted (or set in --old-key-env) with
    whitespace or a BOM at either end, which opens them without it; or a key file whose exact text, untrimmed,
    opens them (TREK given ENCRYPTION_KEY with that whitespace). Said, not done: TREK uses ENCRYPTION_KEY untrimmed,
    so either text can be the real one, and which one the secrets are under is the operator's to confirm. The key
    itself is never shown."""
    keys = list(rotation.keys.old)
    for index, form in with_other_forms(keys).items():
        opened = _opened_by(keys[index], rotation.path, rotation.args.wait)
        if opened and form.untrimmed:
            return WrongKeyError(f"{error.message}\n{untrimmed_opens(form.given, opened, in_use=False)}")
        if opened:
            return WrongKeyError(
                f"{error.message}\nThe {form.given.source} has whitespace or a byte-order mark at its start or end "
                f"(pasted with it?). Without it, that key opens {opened} of them. Give it again without it, or save it "
                "to a file and use --old-key-file FILE (a key file is read trimmed, as TREK reads .encryption_key).")
    return error
