"""The one way keyrotate creates a file: exclusive, never through a link, mode 0600 (a replaced file keeps its mode), fsynced."""

from __future__ import annotations

import glob
import os
import shlex
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from keyrotate.errors import CannotWriteError

# O_NOFOLLOW: a link planted at the final path component is refused, not followed (ELOOP).
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_owner(fd: int, owner_like: Path | None) -> None:
    """Give the file ``owner_like``'s owner and group: run as root, TREK's user must still read it."""
    if owner_like is None:
        return
    try:
        info = os.stat(owner_like)
    except OSError:
        return
    with suppress(PermissionError):  # not root: the file is ours, as the original was
        os.fchown(fd, info.st_uid, info.st_gid)


def _refuse_existing(path: Path, exc: OSError) -> CannotWriteError:
    if isinstance(exc, FileExistsError) or os.path.islink(path):
        kind = "a symbolic link" if os.path.islink(path) else "already there"
        return CannotWriteError(f"{path} is {kind}; keyrotate creates its files only where nothing exists yet. "
                                "Move it away (or choose another path) and run again.")
    return CannotWriteError(f"Cannot create {path}: {exc.strerror or exc}.")


@contextmanager
def new_file(path: Path, *, owner_like: Path | None = None, mode_like: Path | None = None) -> Iterator[BinaryIO]:
    """A new file at ``path`` (never an existing one, never through a link), mode 0600 or, once
    written, ``mode_like``'s permission bits.

    On a clean exit the data and the directory entry are fsynced; on an error the file is removed.
    """
    try:
        fd = os.open(path, _CREATE, 0o600)
    except OSError as exc:
        raise _refuse_existing(path, exc) from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        copy_owner(fd, owner_like)
        with os.fdopen(fd, "wb", closefd=False) as handle:
            yield handle
            handle.flush()
            if mode_like is not None:
                _keep_mode(fd, mode_like)
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    fsync_directory(path.parent)


def write_new_file(path: Path, data: bytes, *, owner_like: Path | None = None,
                   mode_like: Path | None = None) -> None:
    with new_file(path, owner_like=owner_like, mode_like=mode_like) as handle:
        handle.write(data)


def check_replaceable(target: Path) -> os.stat_result | None:
    """``target`` is missing (None) or a regular file (its ``lstat``): never a link, a directory or a device."""
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        quoted = shlex.quote(str(target))
        raise CannotWriteError(f"{target} is a symbolic link; keyrotate does not write through links. Replace it "
                               f"with a regular file holding what it points to (cp --remove-destination \"$(readlink "
                               f"-f {quoted})\" {quoted}) and run again.")
    if not stat.S_ISREG(info.st_mode):
        raise CannotWriteError(f"{target} is not a regular file; keyrotate will not replace it.")
    return info


@contextmanager
def replacing(target: Path, *, owner_like: Path | None = None,
              mode_like: Path | None = None) -> Iterator[tuple[Path, BinaryIO]]:
    """Write a temporary file beside ``target``, then put it in ``target``'s place atomically.

    The temporary file is made by ``mkstemp`` (exclusive, no link following) in the
    target's directory; ``os.replace`` runs only once ``lstat`` shows the target
    missing or a regular file. It gets the target's permission bits (else those of
    ``mode_like``, else 0600): TREK may read its key through the group (root:nogroup 0640).
    On any error the temporary file is removed and the target is left as it was.
    """
    check_replaceable(target)
    fd, partial = _temporary(target.parent, target.name)
    try:
        copy_owner(fd, owner_like)  # before the mode: a chown may clear mode bits
        with os.fdopen(fd, "w+b", closefd=False) as handle:
            yield partial, handle
            handle.flush()
            _keep_mode(fd, target if os.path.lexists(target) or mode_like is None else mode_like)
            os.fsync(fd)
        check_replaceable(target)
        os.replace(partial, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(partial)
        raise
    finally:
        os.close(fd)
    fsync_directory(target.parent)


def mode_of(path: Path | str) -> str:
    """``mode 0640``: what a message says about a file keyrotate wrote or replaced."""
    try:
        return f"mode {stat.S_IMODE(os.stat(path).st_mode):04o}"
    except OSError:
        return "mode unknown"


def _keep_mode(fd: int, model: Path) -> None:
    """The permission bits of ``model`` (the file replaced), given only once the data is written."""
    info = check_replaceable(model)
    if info is not None:
        os.fchmod(fd, stat.S_IMODE(info.st_mode) & 0o777)  # not setuid/setgid/sticky: a key file needs none


def _temporary(directory: Path, stem: str) -> tuple[int, Path]:
    """A new 0600 file in ``directory``, after removing what a killed run left there under ``stem``."""
    for leftover in directory.glob(f".{glob.escape(stem)}.keyrotate-*.partial*"):
        with suppress(OSError):  # unlink removes a planted link itself, never its target
            os.unlink(leftover)
    fd, name = tempfile.mkstemp(prefix=f".{stem}.keyrotate-", suffix=".partial", dir=directory)
    os.fchmod(fd, 0o600)
    return fd, Path(name)


@contextmanager
def temporary_beside(target: Path, stem: str) -> Iterator[tuple[Path, int]]:
    """An empty 0600 file next to ``target`` for another writer (SQLite) to fill, then
    :func:`publish` it; removed on exit if it was not published. ``stem`` names it."""
    fd, partial = _temporary(target.parent, stem)
    try:
        yield partial, fd
    finally:
        os.close(fd)
        for leftover in (partial, *(Path(f"{partial}-{kind}") for kind in ("journal", "wal", "shm"))):
            with suppress(FileNotFoundError):
                os.unlink(leftover)


def publish(partial: Path, fd: int, target: Path) -> None:
    """Give the filled temporary file its final name, exclusively: ``os.link`` never follows
    or replaces what is at ``target`` (a planted link included)."""
    if not os.path.samestat(os.fstat(fd), os.lstat(partial)):
        raise CannotWriteError(f"{partial} was replaced while keyrotate wrote it; nothing was changed.")
    os.fsync(fd)
    try:
        os.link(partial, target, follow_symlinks=False)
    except OSError as exc:
        raise _refuse_existing(target, exc) from None
    os.unlink(partial)
    fsync_directory(target.parent)
