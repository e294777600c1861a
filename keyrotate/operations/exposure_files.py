"""The files a copy of the data directory carries beside the database: SQLite copies of it and keys.

Only the database's own directory and its ``backups/`` are looked at (not ``uploads/``, nothing deeper),
and no link is followed: a thief who copied the directory got the link, not what it points to. A copy is
recognised by SQLite's 16-byte header, whatever its name; a key by a small file holding one word of text.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyrotate.trek.keys import Key, js_trim

SQLITE_HEADER = b"SQLite format 3\x00"
SMALL = 4096  # larger files are not key files (a key TREK uses is a line of text)
KEY_TEXT = range(16, 1025)  # lengths of a word taken for a key: shorter ones match too much
LIVE_SIDE_FILES = ("", "-wal", "-shm", "-journal")
TREK_KEY_FILE = ".encryption_key"  # the key TREK uses: never "another key found here"
MOST_KEYS = 20  # other keys tried on each copy: each costs a trial decryption of what the others leave


@dataclass(frozen=True)
class FoundFiles:
    databases: tuple[Path, ...]  # SQLite files other than the live database and its side files
    key_files: tuple[tuple[Path, Key], ...]  # small files and their text (trimmed), as a Key: never shown
    unreadable: tuple[Path, ...] = ()  # files (or backups/ itself) this user may not read: not checked


@dataclass(frozen=True)
class FoundKeys:
    holding_suspected: tuple[Path, ...]  # files holding a suspected key's text
    others: tuple[Key, ...]  # other keys found in files (one per secret; source names the file)
    left_out: int = 0  # more keys than MOST_KEYS: not tried


def files_beside(db_path: Path) -> FoundFiles:
    """SQLite files and small text files in the database's directory and its ``backups/`` (sorted)."""
    live = {db_path.name + side for side in LIVE_SIDE_FILES}
    databases: list[Path] = []
    key_files: list[tuple[Path, Key]] = []
    unreadable: list[Path] = []
    for path, head, size in _regular_files(db_path.parent, live, unreadable):
        if head.startswith(SQLITE_HEADER):
            databases.append(path)
        elif size <= SMALL:
            text = _small_text(path)
            if text:  # held as a Key, whose repr never shows it
                key_files.append((path, Key(text, f"key in {path}")))
    return FoundFiles(tuple(databases), tuple(key_files), tuple(unreadable))


def _regular_files(folder: Path, live: set[str], unreadable: list[Path]) -> Iterator[tuple[Path, bytes, int]]:
    """Each regular file (not a link) of ``folder`` and of its ``backups/`` (not a link either): path, first
    16 bytes, size. What this user may not read is added to ``unreadable``."""
    folders = [folder]
    backups = folder / "backups"
    if not backups.is_symlink() and backups.is_dir():
        folders.append(backups)
    for where in folders:
        try:
            entries = sorted(os.scandir(where), key=lambda e: e.name)
        except PermissionError:
            unreadable.append(where)
            continue
        except OSError:
            continue
        for entry in entries:
            if where == folder and entry.name in live:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                with _open_no_follow(Path(entry.path)) as handle:
                    size = os.fstat(handle.fileno()).st_size
                    yield Path(entry.path), handle.read(len(SQLITE_HEADER)), size
            except PermissionError:
                unreadable.append(Path(entry.path))
            except OSError:
                continue


def _open_no_follow(path: Path) -> _File:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO or device since it was listed
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return _File(fd)


class _File:
    """A read-only file descriptor as a context manager (``open`` cannot take O_NOFOLLOW)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def read(self, size: int) -> bytes:
        return os.read(self._fd, size)

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)


def _small_text(path: Path) -> str | None:
    try:
        with _open_no_follow(path) as handle:
            data = handle.read(SMALL + 1)
        return js_trim(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def keys_in_files(found: FoundFiles, db_path: Path, suspected: Sequence[Key]) -> FoundKeys:
    """Which small files hold a suspected key's text, and the other keys the rest may be (one word each).

    TREK's own ``.encryption_key`` beside the database is left out: it is the key the database is under,
    not a copy of an old one.
    """
    holding: list[Path] = []
    others: list[Key] = []
    for path, key in found.key_files:
        if path.parent == db_path.parent and path.name == TREK_KEY_FILE:
            continue
        text = key.reveal()
        if any(_holds(text, known) for known in suspected):
            holding.append(path)
            continue
        if len(text) not in KEY_TEXT or any(ch.isspace() for ch in text):
            continue
        if not any(key.same_secret_as(k) for k in others):
            others.append(key)
    return FoundKeys(tuple(holding), tuple(others[:MOST_KEYS]), max(0, len(others) - MOST_KEYS))


def _holds(text: str, key: Key) -> bool:
    """The file's text is the key, or (a long key) holds it, e.g. ``ENCRYPTION_KEY=...`` in an env file."""
    secret = key.reveal()
    return text == js_trim(secret) or (len(secret) >= KEY_TEXT.start and secret in text)
