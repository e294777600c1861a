"""Leak response: every secret a suspected key opens, as a checklist, never the values.

One read-only pass of the Scanner with the suspected key(s) records *which*
rows opened (through its ``on_token`` hook); :mod:`exposure_describe` turns
them into words (what it is, whose it is, where it is revoked) and streams them
on, counted per group for the checklist. Copies of the database the rotation
cannot reach, and what the data directory gives away besides the key
(``beyond``), are listed too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keyrotate.errors import KeyProblemError
from keyrotate.operations.audit import AuditFinding, legacy_plaintext, plaintext_in_this_version
from keyrotate.operations.exposure_copies import CopyProgress, ExposedCopy, find_exposed_copies
from keyrotate.operations.exposure_describe import Describer, RowsSink
from keyrotate.operations.exposure_groups import GroupTally
from keyrotate.operations.exposure_plaintext import plaintext_owners
from keyrotate.operations.exposure_records import ExposedSecret, SecretRows
from keyrotate.rotation.scanning import ProgressCallback, Scanner
from keyrotate.rotation.session import read_session
from keyrotate.rotation.tallies import Tally
from keyrotate.rotation.workers import crypto_pool
from keyrotate.trek.audit_log import session_secret_replaced_after_rotation
from keyrotate.trek.beyond import SESSION_SECRET, Finding, find_beyond
from keyrotate.trek.formats import Keyring
from keyrotate.trek.keys import Key


@dataclass(frozen=True)
class ExposureReport:
    """What one pass found. ``secrets`` is filled only when asked (small databases, tests); the
    checklist comes from ``groups``, whose size does not grow with the number of secrets."""

    database: str
    key_sources: tuple[str, ...]
    secrets: tuple[ExposedSecret, ...] = ()
    copies: tuple[ExposedCopy, ...] = ()
    plaintext: int = 0  # values in catalogued locations stored in plaintext: readable without any key
    not_opened: int = 0  # tokens the suspected key does not open
    groups: GroupTally = field(default_factory=GroupTally)
    beyond: tuple[Finding, ...] = ()
    command: str = "exposure"
    plaintext_found: tuple[AuditFinding, ...] = ()  # where the plaintext values are (``audit``'s findings)
    plaintext_groups: GroupTally = field(default_factory=GroupTally)  # whose they are (whole values only)
    opened_by_key: tuple[int, ...] = ()  # per suspected key, in order: the values it was the first to open
    plaintext_encrypted: int = 0  # of ``plaintext``, what the rotate --incident run reporting them encrypted

    @property
    def exposed(self) -> int:
        return self.groups.total


SecretSink = Callable[[ExposedSecret], None]
SESSION_SECRET_REPLACED = (
    "done, if the suspected key was in use before keyrotate's last rotation: TREK's audit log shows the session "
    "secret replaced after that rotation, so a copy taken while the key was in use holds an old one. Delete any old "
    "copy of it kept beside the data (`<backup>.jwt_secret`, `.jwt_secret.keyrotate-old-*`) with the backups")


def find_exposure(
    db_path: Path, suspected: Sequence[Key], *, busy_timeout: float = 10.0, progress: ProgressCallback | None = None,
    check_copies: bool = True, on_secret: SecretSink | None = None, keep_secrets: bool = True,
    on_rows: RowsSink | None = None, data_dir: Path | None = None, workers: int | None = None,
    on_copy: CopyProgress | None = None,
) -> ExposureReport:
    """One read-only pass: each secret the suspected keys open goes to ``on_secret`` as it is found.

    ``on_rows`` gets the same secrets as :class:`SecretRows` (a location's rows together, no object per
    secret): the fast way to write them out. ``keep_secrets`` also keeps them all in the report (memory
    grows with them: not for the CLI). ``data_dir`` (default: the database's directory) is where
    ``.jwt_secret`` is looked for.
    """
    if not suspected:
        raise KeyProblemError("No suspected key was given.")
    kept: list[ExposedSecret] = []
    groups = GroupTally()
    as_objects = keep_secrets or on_secret is not None

    def emit(rows: SecretRows) -> None:
        if on_rows is not None:
            on_rows(rows)
        if as_objects:
            for secret in rows.secrets():
                if keep_secrets:
                    kept.append(secret)
                if on_secret is not None:
                    on_secret(secret)

    with crypto_pool(db_path, suspected, workers) as pool, \
            read_session(db_path, busy_timeout, checked_first=on_rows is not None or on_secret is not None) as session:
        conn, schema = session.conn, session.info.schema
        describer = Describer(conn, schema, groups, emit if as_objects or on_rows else None)
        scanner = Scanner(conn, session.info, session.resolved, Keyring(suspected), on_token=describer.on_token,
                          pool=pool)
        scanner.run("exposure", progress)
        describer.finish()
        beyond = find_beyond(conn, schema, db_path.parent if data_dir is None else data_dir)
        if not groups.total and describer.missed and session_secret_replaced_after_rotation(conn):
            beyond = _session_secret_done(beyond)
        # Plaintext TREK keeps by design (3.0.15's users.unsplash_api_key) is as exposed as the legacy kind.
        plaintext = (*plaintext_in_this_version(session, db_path), *legacy_plaintext(scanner.tallies.values(), db_path))
        plain_groups = GroupTally(names=groups.names)
        if plaintext:  # only the locations audit's findings name: no scan of a table without plaintext
            plaintext_owners(conn, session.resolved, {f.location for f in plaintext}, plain_groups,
                             describer.load_names)
    copies = (find_exposed_copies(db_path, suspected, unopened_here=describer.missed, on_copy=on_copy)
              if check_copies else ())
    return ExposureReport(str(db_path), tuple(k.source for k in suspected), tuple(kept), copies,
                          sum(f.values for f in plaintext), describer.missed, groups, beyond,
                          plaintext_found=plaintext, plaintext_groups=plain_groups,
                          opened_by_key=_opened_per_key(scanner.tallies.values(), len(suspected)))


def _session_secret_done(beyond: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """The suspected key opens nothing here any more, and the session secret was replaced after the rotation
    that moved the database off it: a copy from while that key was in use holds an old session secret."""
    return tuple(dataclasses.replace(f, done=True, action=SESSION_SECRET_REPLACED) if f.what == SESSION_SECRET else f
                 for f in beyond)


def _opened_per_key(tallies: Iterable[Tally], keys: int) -> tuple[int, ...]:
    counts = [0] * keys
    for tally in tallies:
        for index, opened in enumerate(tally.opened_by[:keys]):
            counts[index] += opened
    return tuple(counts)
