"""Replacing TREK's session-signing secret (``data/.jwt_secret``) after a leak; the CLI's side is cli/jwt_secret.py.

A new secret has TREK's own shape (32 random bytes as hex, the old file's
owner, group and mode kept) and signs every user out. An install still on the
``.jwt_secret`` fallback for encryption (no ``.encryption_key``) would lose its
secrets with it, so encryption first gets its own file holding the key it uses
today; only then is ``.jwt_secret`` replaced. A crash between the two leaves a
working install, and running the command again finishes the job.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from keyrotate.crashpoints import crash_point
from keyrotate.errors import InputNotFoundError, KeyProblemError
from keyrotate.store.database import connect, translate_error
from keyrotate.store.files import replacing, write_new_file
from keyrotate.trek.audit_log import ROTATE_JWT_SECRET, record_in_audit_log
from keyrotate.trek.keys import js_trim


@dataclass(frozen=True)
class JwtRotation:
    jwt_secret: str
    saved_old: str  # where the old secret was saved (0600)
    encryption_key_written: str | None  # .encryption_key created first (the install was on the fallback)
    audit_logged: bool


def _read_no_links(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise InputNotFoundError(f"{path} does not exist: there is no session secret to replace.") from None
    except OSError as exc:
        raise KeyProblemError(f"Cannot read {path} ({exc.strerror}); keyrotate does not follow symbolic links "
                              "there. Replace the link by the file itself first.") from None
    try:
        return os.read(fd, 1 << 16).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def rotate_jwt_secret(data_dir: Path, saved_old: Path, *, audit: bool = True,
                      busy_timeout: float = 10.0) -> JwtRotation:
    jwt = data_dir / ".jwt_secret"
    old_text = _read_no_links(jwt)
    encryption_key = data_dir / ".encryption_key"
    written = None
    in_use = js_trim(old_text)  # the key TREK encrypts with on the fallback: .jwt_secret as TREK trims it
    if not os.path.lexists(encryption_key) and in_use:
        # The fallback: TREK encrypts with this very secret. Give encryption its own file first, which
        # TREK must read as it reads .jwt_secret (say through its group): same owner, group and mode.
        write_new_file(encryption_key, in_use.encode("utf-8"), owner_like=jwt, mode_like=jwt)
        written = str(encryption_key)
    crash_point("jwt-secret")
    write_new_file(saved_old, old_text.encode("utf-8"), owner_like=jwt)
    with replacing(jwt, owner_like=jwt) as (_, handle):
        handle.write(secrets.token_hex(32).encode("ascii"))
    logged = False
    if audit and (data_dir / "travel.db").is_file():
        logged = _audit_jwt(data_dir / "travel.db", busy_timeout, written is not None)
    return JwtRotation(str(jwt), str(saved_old), written, logged)


def _audit_jwt(db: Path, busy_timeout: float, separated: bool) -> bool:
    try:
        with closing(connect(db, busy_timeout=busy_timeout, for_writing=True)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            logged = record_in_audit_log(conn, ROTATE_JWT_SECRET, {
                "sessions_invalidated": "all", "encryption_key_file_created": separated})
            conn.execute("COMMIT")
            return logged
    except sqlite3.Error as exc:
        raise translate_error(exc, db) from None
