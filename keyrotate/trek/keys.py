"""The ENCRYPTION_KEY as TREK reads it: a value that never shows in ``repr`` or logs, and where it comes from.

Key files are trimmed like JavaScript's ``trim()``; the key TREK uses is resolved from its data directory as
TREK does (TREK-FORMAT.md section 2); a new key TREK would not read back unchanged is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from keyrotate.errors import CannotWriteError, InputNotFoundError, KeyProblemError
from keyrotate.store.files import write_new_file

API_DOMAIN = "api_keys"
MFA_DOMAIN = "mfa"

# What JavaScript's String.prototype.trim() strips (ECMA-262 WhiteSpace and LineTerminator). TREK reads
# .encryption_key and .jwt_secret with it. Python's str.strip() differs: it keeps U+FEFF (the BOM) and
# strips U+001C-U+001F and U+0085, which JS keeps.
JS_TRIMMED = (
    "\t\n\x0b\x0c\r \u00a0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_LINE_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"
WEAK_KEY_LENGTH = 32


def js_trim(text: str) -> str:
    """``text.trim()`` exactly as JavaScript (and so TREK) does it."""
    return text.strip(JS_TRIMMED)


@dataclass(frozen=True, eq=False)
class Key:
    """An ENCRYPTION_KEY text plus where it came from.

    ``source`` is a human label ("old key from data/.encryption_key") and is
    the only thing ``repr``/``str`` show.
    """

    _text: str = field(repr=False)
    source: str
    # A key file's exact text, when TREK's trimmed reading of it is not that text plus at most one line break
    # (:func:`file_text_beyond_trim`); kept only to try it where a leak is assessed: see :meth:`untrimmed`.
    file_text: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not js_trim(self._text):
            raise KeyProblemError(f"The key ({self.source}) is empty. Give a non-empty key.")

    def __repr__(self) -> str:
        return f"Key(source={self.source!r})"

    __str__ = __repr__

    def same_secret_as(self, other: Key) -> bool:
        return secrets.compare_digest(self._text.encode(), other._text.encode())

    def aes_key(self, domain: str) -> bytes:
        """TREK's derivation: SHA-256 of ``KEY:DOMAIN:v1``."""
        return hashlib.sha256(f"{self._text}:{domain}:v1".encode()).digest()

    def reveal(self) -> str:
        """The key text, for writing a key file. Never log the result."""
        return self._text

    def untrimmed(self) -> Key | None:
        """The key file's exact text as a key (None when it has no other form): TREK given ENCRYPTION_KEY with
        whitespace at an end uses that text as is and writes it into .encryption_key (TREK-FORMAT.md section 2),
        so it, not the trimmed text TREK reads from the file, may be what the secrets are under, and whoever
        holds the file holds it."""
        return None if self.file_text is None else Key(self.file_text, f"{self.source} (untrimmed)")


def generate_key_text() -> str:
    """A new key in the shape of ``openssl rand -hex 32``."""
    return secrets.token_hex(32)


KEY_FILE_LIMIT = 64 * 1024  # far above any key; a larger file is a wrong path (a database, a log, /dev/zero)


def file_text_beyond_trim(text: str) -> str | None:
    """``text`` (a key file's content) when TREK's trimmed reading of it drops more than one final line break,
    else None. A key followed by one line break is how editors, ``echo`` and keyrotate write a key file; anything
    else TREK trims away is worth trying as is."""
    trimmed = js_trim(text)
    if not trimmed or text in (trimmed, trimmed + "\n", trimmed + "\r\n"):
        return None
    return text


def key_from_file(path: Path, label: str) -> tuple[Key, list[str]]:
    """Read a key file the way TREK reads ``.encryption_key``: trimmed.

    Returns the key and warnings (a key file others can read).
    """
    warnings: list[str] = []
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyProblemError(f"Key file {path} does not exist.") from None
    except OSError as exc:
        raise KeyProblemError(f"Cannot read key file {path}: {exc.strerror}.") from None
    if stat.S_ISDIR(info.st_mode):
        raise KeyProblemError(f"{path} is a directory; a key file is a file holding the key on one line.")
    warnings.extend(_readable_by_others(path, info.st_mode))
    too_large = stat.S_ISREG(info.st_mode) and info.st_size > KEY_FILE_LIMIT
    try:
        raw = b"" if too_large else path.read_bytes()
    except OSError as exc:
        raise KeyProblemError(f"Cannot read key file {path}: {exc.strerror}.") from None
    if too_large or len(raw) > KEY_FILE_LIMIT:
        raise KeyProblemError(f"Key file {path} is larger than {KEY_FILE_LIMIT // 1024} KiB: that is not a key file "
                              "(a key is one line). Check the path.")
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyProblemError(f"Key file {path} is not UTF-8 text.") from None
    text = js_trim(content)
    if not text:
        raise KeyProblemError(f"Key file {path} is empty. It should hold the key on one line.")
    return Key(text, f"{label} key file {path}", file_text_beyond_trim(content)), warnings


def _readable_by_others(path: Path, mode: int) -> list[str]:
    """Every user of the machine may read it. Group bits alone are no warning: TREK may read its key through
    its group (root:trek 0640), and "chmod 600" would lock it out."""
    if not mode & 0o007:
        return []
    trek_reads_it = path.name in (".encryption_key", ".jwt_secret")  # maybe as "other": TREK's user in a container
    return [f"Key file {path} can be read by other users (mode {stat.S_IMODE(mode):04o}); consider: "
            f"chmod o-rwx {shlex.quote(str(path))}"
            + (" once TREK's user owns it or is in its group (else TREK can no longer read it)" if trek_reads_it else "")]


def key_from_env(name: str, label: str) -> Key:
    """Read a key from an environment variable, untrimmed, as TREK does."""
    value = os.environ.get(name)
    if value is None:
        raise KeyProblemError(f"Environment variable {name} is not set.")
    if not js_trim(value):
        raise KeyProblemError(f"Environment variable {name} is empty.")
    return Key(value, f"{label} key from ${name}")


@dataclass(frozen=True)
class TrekKeyResolution:
    """Which key TREK would use for a data directory, and why."""

    key: Key
    origin: str  # "encryption_key_file" | "jwt_secret_fallback"
    explanation: str
    warnings: tuple[str, ...] = ()


def resolve_trek_key(data_dir: Path) -> TrekKeyResolution:
    """TREK's start-up order without the environment: ``.encryption_key`` then
    ``.jwt_secret`` (both trimmed). The environment variable is left to the
    caller, since keyrotate's shell is rarely TREK's."""
    enc = data_dir / ".encryption_key"
    jwt = data_dir / ".jwt_secret"
    for path, origin in ((enc, "encryption_key_file"), (jwt, "jwt_secret_fallback")):
        try:
            content = path.read_bytes().decode("utf-8")  # not read_text: its newline translation changes the text
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyProblemError(f"Cannot read {path}: {exc}.") from None
        text = js_trim(content)
        if not text:
            continue
        warnings = tuple(_readable_by_others(path, path.stat().st_mode))
        key = Key(text, f"old key from {path}", file_text_beyond_trim(content))
        if origin == "encryption_key_file":
            return TrekKeyResolution(key, origin, f"TREK reads {path}", warnings)
        return TrekKeyResolution(
            key,
            origin,
            f"{enc} is missing, so TREK falls back to {path} (an install from before April 2026); "
            "after the rotation keyrotate writes the new key to .encryption_key and the fallback is no longer used",
            warnings,
        )
    raise InputNotFoundError(
        f"{data_dir} has neither .encryption_key nor .jwt_secret, so keyrotate cannot tell which key TREK uses. "
        "Give the old key with --old-key-file or --old-key-env."
    )


# What a key copied from a .env file or a shell starts with (a base64 key may end in "=": only these names count).
_ENV_LINE = re.compile(r"(?:export\s+[A-Za-z_]\w*|ENCRYPTION_KEY)\s*=")


def refuse_unreadable_new_key(key: Key) -> None:
    """A new key must be exactly what TREK reads back from ``.encryption_key`` (trimmed), and
    fit on one line of an env file. Names the problem, never the key."""
    text = key.reveal()
    problem = None
    if js_trim(text) != text:
        end = "starts" if text[0] in JS_TRIMMED else "ends"
        char = text[0] if end == "starts" else text[-1]
        problem = (f"{end} with {_describe(char)}, which TREK strips when it reads .encryption_key, so TREK would "
                   "read a different key than the one the secrets are under")
    elif "\x00" in text:
        problem = "holds a NUL character"
    elif any(c in _LINE_BREAKS for c in text):
        problem = "holds a line break, which no key file or environment line keeps intact"
    elif len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        problem = ("is wrapped in quotes, which an env file or docker compose strips: a TREK given it as "
                   "ENCRYPTION_KEY would read a different key than the one the secrets are under")
    elif _ENV_LINE.match(text):
        problem = "looks like a line of an env file (ENCRYPTION_KEY=...), not the key itself: give only the value"
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            problem = "is not valid UTF-8 text"
    if problem:
        raise KeyProblemError(f"The new key ({key.source}) {problem}. Nothing was written. Use a key of "
                              "printable characters, e.g. one from: keyrotate generate-key --out FILE")


def new_key_warnings(key: Key) -> list[str]:
    """A usable but weak new key: short, or made of very few different characters."""
    text = key.reveal()
    if len(text) < WEAK_KEY_LENGTH:
        weakness = f"is shorter than {WEAK_KEY_LENGTH} characters"
    elif len(set(text)) < 8:
        weakness = "uses fewer than 8 different characters"
    else:
        return []
    return [f"The new key ({key.source}) {weakness}; a strong key is 64 random hex characters: "
            "keyrotate generate-key --out FILE"]


def _describe(char: str) -> str:
    names = {"\n": "a line feed", "\r": "a carriage return", "\t": "a tab", " ": "a space",
             "\ufeff": "a byte-order mark (U+FEFF)"}
    return names.get(char, f"whitespace (U+{ord(char):04X})")


def create_key_file(path: Path, text: str, *, owner_like: Path | None = None) -> None:
    """Write a key to a new file, mode 0600, fsynced; never overwrite one, never follow a link."""
    if path.exists() and not path.is_symlink():
        raise KeyProblemError(f"{path} already exists; keyrotate will not overwrite a key file.")
    try:
        write_new_file(path, (text + "\n").encode("utf-8"), owner_like=owner_like)
    except OSError as exc:  # a full disk: the write fails without naming the file
        raise CannotWriteError(f"Could not write the key to {path} ({exc.strerror or exc}); no part of it was left "
                               "there and nothing else was changed. Free some space there, or choose another file, "
                               "and run again.") from None
