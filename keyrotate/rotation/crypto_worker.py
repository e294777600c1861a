"""A crypto worker's own process: a fresh interpreter that imports only what process_batch needs.

:class:`keyrotate.rotation.workers.CryptoPool` starts it as ``python -I -S -c``
:data:`BOOTSTRAP`, so it maps none of its parent's memory (a forked worker
counted the parent's whole heap, SQLite and imports, in its own resident size)
and loads no more than the batch needs. The keys arrive as the first message on
its pipe, never through argv, the environment or a file. It ignores the
interrupts (they are the parent's to handle), dies with its parent, and holds
neither the parent's stdin nor its stdout.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
from contextlib import suppress
from typing import Any, BinaryIO

from keyrotate.interrupts import SIGNALS

# Run as ``python -I -S -c BOOTSTRAP <parent pid> <pipe fd> <import path>...``: no site-packages scan, no .pth
# files, nothing from the environment; the parent gives the import path it found keyrotate and cryptography on.
BOOTSTRAP = ("import sys; sys.path[:0] = sys.argv[3:]; from keyrotate.rotation.crypto_worker import main; "
             "main(int(sys.argv[1]), int(sys.argv[2]))")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def main(parent: int, fd: int) -> None:
    """The worker's whole life: batches in, results out, until told to stop or the parent is gone."""
    # The parent started this process with the interrupts blocked, so none can arrive before they are ignored.
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    _die_with_parent(parent)
    _use_builtin_sha256()
    with socket.socket(fileno=fd) as pipe, pipe.makefile("rb") as incoming:
        _serve(pipe, incoming)
    os._exit(0)  # nothing to flush: the interpreter's teardown would only keep the parent waiting


def _serve(pipe: socket.socket, incoming: BinaryIO) -> None:
    # Imported only here, after main's first steps: the parent imports this module but never serves.
    from keyrotate.errors import KeyrotateError
    from keyrotate.rotation.batches import serve_message
    from keyrotate.trek.formats import Keyring

    keys = _receive(incoming)
    if keys is None:
        return
    keyring = Keyring(keys)
    while (message := _receive(incoming)) is not None:
        try:
            reply: tuple[bool, Any] = (True, serve_message(keyring, message))
        except KeyrotateError as exc:  # messages name rows, never values
            reply = (False, exc)
        except Exception as exc:  # noqa: BLE001 - anything else is a bug; its type is enough
            reply = (False, KeyrotateError(f"A crypto worker failed ({type(exc).__name__}); nothing was committed."))
        try:
            _send(pipe, pickle.dumps(reply, pickle.HIGHEST_PROTOCOL))
        except OSError:  # the parent closed its end: it is stopping or gone
            return


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when the process that started it dies, even by SIGKILL."""
    if sys.platform == "linux":
        with suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _use_builtin_sha256() -> None:
    """Derive the AES keys with Python's own SHA-256 (the same digest) instead of loading OpenSSL's libcrypto,
    about 4 MB resident, for a handful of hashes: cryptography brings its own OpenSSL for the AES-GCM."""
    from importlib.util import find_spec

    if find_spec("_sha256") is not None and "hashlib" not in sys.modules:  # else hashlib keeps OpenSSL
        sys.modules["_hashlib"] = None  # type: ignore[assignment]  # hashlib then falls back to the built-ins


# Framed as multiprocessing.connection.Connection frames them (the parent's end is one): a 4-byte big-endian
# length, or -1 and an 8-byte length, then a pickle. Kept here so the worker need not import multiprocessing.


def _receive(incoming: BinaryIO) -> Any:
    """The next message, or None when the parent said stop or its end is closed."""
    try:
        header = incoming.read(4)
        if len(header) < 4:
            return None
        (size,) = struct.unpack("!i", header)
        if size == -1:
            (size,) = struct.unpack("!Q", incoming.read(8))
        payload = incoming.read(size)
    except (OSError, struct.error):
        return None
    if len(payload) < size:
        return None
    return pickle.loads(payload)


def _send(pipe: socket.socket, payload: bytes) -> None:
    size = len(payload)
    header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!i", -1) + struct.pack("!Q", size)
    pipe.sendall(header)
    pipe.sendall(payload)
