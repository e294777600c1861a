"""Who else has the database open: TREK must be stopped during a rotation.

On Linux every open file of every process shows up as a link under
``/proc/<pid>/fd``. A process holding ``travel.db``, its ``-wal``, ``-shm`` or
``-journal`` is a running TREK (or another program) that could write secrets
under the old key while keyrotate works, or right after it. The files are
compared by device and inode, not by the link's text: TREK in a container
opens the same file as ``/app/data/travel.db``. Elsewhere, and for processes
of other users when not run as root, nothing can be seen: the SQLite lock is
then the only protection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keyrotate.errors import DatabaseBusyError

PROC = Path("/proc")
DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Holder:
    pid: int
    name: str  # /proc/<pid>/comm: the program name only, never its command line (it may hold secrets)
    file: str


def processes_holding(db_path: Path) -> list[Holder]:
    """Other processes with the database (or its -wal/-shm/-journal) open."""
    wanted = set()
    for suffix in DATABASE_SUFFIXES:
        try:
            found = os.stat(f"{db_path}{suffix}")
        except OSError:
            continue  # no such file (yet): nobody holds it
        wanted.add((found.st_dev, found.st_ino))
    holders = []
    try:
        entries = os.listdir(PROC)
    except OSError:
        return []
    me = os.getpid()
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = PROC / entry / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or another user's process
        for fd in fds:
            try:
                opened = os.stat(fd_dir / fd)  # the open file itself, whatever path its process named it by
            except OSError:
                continue
            if (opened.st_dev, opened.st_ino) in wanted:
                holders.append(Holder(int(entry), _program_name(PROC / entry), _link_text(fd_dir / fd)))
                break
    return holders


def _link_text(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return "?"


def _program_name(pid_dir: Path) -> str:
    try:
        return (pid_dir / "comm").read_text(encoding="utf-8", errors="replace").strip() or "?"
    except OSError:
        return "?"


def refuse_if_open_elsewhere(db_path: Path) -> None:
    holders = processes_holding(db_path)
    if not holders:
        return
    listed = ", ".join(f"pid {h.pid} ({h.name})" for h in holders[:5]) + (" ..." if len(holders) > 5 else "")
    raise DatabaseBusyError(
        f"{db_path} is open in another process: {listed}. TREK must be stopped during a rotation: a running TREK "
        "keeps the old key in memory and goes on writing secrets under it, which would leave the database under two "
        "keys. Stop it (for example: docker compose stop trek) and run keyrotate again. If you are sure that process "
        "never writes secrets (a backup tool, a read-only viewer), add --allow-running. Nothing was changed."
    )
