"""Verification: which of the given keys opens each secret, read-only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from keyrotate.errors import KeyProblemError
from keyrotate.rotation.failures import name_failures
from keyrotate.rotation.outcome import locations
from keyrotate.rotation.report import VerifyReport
from keyrotate.rotation.scanning import ProgressCallback, Scanner
from keyrotate.rotation.session import read_session
from keyrotate.rotation.workers import crypto_pool
from keyrotate.trek.formats import Keyring
from keyrotate.trek.keys import Key


def verify_database(
    db_path: Path,
    keys: Sequence[Key],
    *,
    busy_timeout: float = 10.0,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Read-only: which of ``keys`` opens each secret."""
    if not keys:
        raise KeyProblemError("No key was given to verify.")
    with crypto_pool(db_path, keys, workers) as pool, \
            read_session(db_path, busy_timeout, twin=pool is not None) as session:
        scanner = Scanner(session.conn, session.info, session.resolved, Keyring(keys), pool=pool)
        twin = session.take_twin()
        if twin is not None:  # a database worth a pool: its stray-token scans overlap the crypto
            scanner.search_in_background(db_path, twin)
        scanner.run("verify", progress)
        failed = name_failures(session.conn, scanner.tallies)
    return VerifyReport(
        database=str(db_path),
        trek_version=session.info.version.evidence,
        key_sources=tuple(k.source for k in keys),
        locations=locations(session.resolved, scanner.tallies),
        failures=failed,
    )
