"""What a run found and did, as frozen data, and its JSON form (the text renderings live in keyrotate.cli).

Reports hold counts, locations and row ids. They never hold a key or a
plaintext, so any rendering of them is safe to print or file in a ticket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from keyrotate.rotation.failures import FailedSecret
from keyrotate.trek.catalogue import Presence

SCHEMA_VERSION = 1


def unopened_by_label(locations: Iterable[LocationResult]) -> dict[str, int]:
    return {loc.label: loc.unopened for loc in locations}


def _honest_json(body: dict[str, Any]) -> dict[str, Any]:
    """In JSON, ``catalogued`` says whether TREK's catalogue lists the place and ``blocking`` whether a value
    there that opens under no key fails the run (a token outside the catalogue under no key does too)."""
    for entry in (*body["locations"], *body["failures"]):
        entry["blocking"] = entry["catalogued"]
        entry["catalogued"] = entry["catalogued"] and not entry["outside_catalogue"]
    return body


@dataclass(frozen=True)
class LocationResult:
    """Counts for one location. In a rotation, ``opened_by`` is per old key then the new key."""

    label: str
    table: str
    column: str
    catalogued: bool  # really "blocking" (its unopened values fail the run); in the catalogue: :attr:`in_catalogue`
    presence: Presence = Presence.ACTIVE
    note: str = ""
    opened_by: tuple[int, ...] = ()
    rewritten: int = 0
    plaintext: int = 0
    encrypted_plaintext: int = 0
    empty: int = 0
    unopened: int = 0
    outside_catalogue: bool = False  # found by the search; ``catalogued`` then means its unopened ones block

    @property
    def in_catalogue(self) -> bool:
        return self.catalogued and not self.outside_catalogue

    @property
    def tokens(self) -> int:
        return sum(self.opened_by) + self.unopened


@dataclass(frozen=True)
class RotationReport:
    """What a rotation (or its dry run) found per location, what it wrote, and what is left to do."""

    database: str
    trek_version: str
    key_sources: tuple[str, ...]  # old keys, then the new key: labels only
    dry_run: bool
    committed: bool
    locations: tuple[LocationResult, ...]
    failures: tuple[FailedSecret, ...] = ()
    backup: str | None = None
    restore_command: str | None = None
    restore_needs_old_key: bool = False  # the key file was replaced and its old key not saved (--discard-old-key)
    old_key_saved: str | None = None  # the key file's old key, saved before it was replaced
    key_file_written: str | None = None
    verified_after_commit: bool = False
    warnings: tuple[str, ...] = ()
    next_steps: tuple[str, ...] = ()
    command: str = "rotate"
    notes: tuple[str, ...] = ()  # what a rerun found and finished (see engine._Rotation._nothing_to_do)
    revoked: dict[str, int] = field(default_factory=dict)  # plaintext bearer tokens removed, by kind (revoke.py)

    def _sum(self, name: str, catalogued: bool | None = None) -> int:
        return sum(
            getattr(loc, name) for loc in self.locations if catalogued is None or loc.catalogued == catalogued
        )

    @property
    def new_index(self) -> int:
        return len(self.key_sources) - 1

    @property
    def rotated(self) -> int:
        return self._sum("rewritten")

    @property
    def already_new(self) -> int:
        return sum(loc.opened_by[self.new_index] for loc in self.locations if loc.opened_by)

    @property
    def failed(self) -> int:
        return self._sum("unopened", catalogued=True)

    @property
    def lookalikes(self) -> int:
        return self._sum("unopened", catalogued=False)

    @property
    def outside_catalogue(self) -> int:
        return sum(sum(loc.opened_by) for loc in self.locations if not loc.catalogued)

    def to_json(self) -> dict[str, Any]:
        body = _honest_json(asdict(self))
        body["schema_version"] = SCHEMA_VERSION
        body["totals"] = {
            "rotated": self.rotated,
            "already_on_new_key": self.already_new,
            "plaintext": self._sum("plaintext"),
            "encrypted_plaintext": self._sum("encrypted_plaintext"),
            "empty": self._sum("empty"),
            "failed": self.failed,
            "lookalikes_left_alone": self.lookalikes,
            "found_outside_catalogue": self.outside_catalogue,
        }
        return body


@dataclass(frozen=True)
class VerifyReport:
    """Which of the given keys opened each location's secrets; :attr:`ok` says whether the run passes."""

    database: str
    trek_version: str
    key_sources: tuple[str, ...]
    locations: tuple[LocationResult, ...]
    failures: tuple[FailedSecret, ...] = ()
    warnings: tuple[str, ...] = ()
    command: str = "verify"

    @property
    def catalogued_tokens(self) -> int:
        return sum(loc.tokens for loc in self.locations if loc.in_catalogue)

    @property
    def opened_by_first(self) -> int:
        return sum(loc.opened_by[0] for loc in self.locations if loc.in_catalogue and loc.opened_by)

    @property
    def outside_unopened(self) -> int:
        """Well-formed tokens outside the catalogue that open under no key: they fail verify too."""
        return sum(loc.unopened for loc in self.locations if loc.catalogued and loc.outside_catalogue)

    @property
    def ok(self) -> bool:
        """Every catalogued secret opens under the first key, and no token elsewhere is under no key."""
        return self.opened_by_first == self.catalogued_tokens and not self.outside_unopened

    def to_json(self) -> dict[str, Any]:
        body = _honest_json(asdict(self))
        body["schema_version"] = SCHEMA_VERSION
        body["ok"] = self.ok
        body["totals"] = {
            "catalogued_secrets": self.catalogued_tokens,
            "open_under_first_key": self.opened_by_first,
            "open_under_other_keys": sum(
                sum(loc.opened_by[1:]) for loc in self.locations if loc.in_catalogue and loc.opened_by
            ),
            "open_under_no_key": sum(loc.unopened for loc in self.locations if loc.in_catalogue),
            "outside_catalogue_open_under_no_key": self.outside_unopened,
            "plaintext": sum(loc.plaintext for loc in self.locations),
            "empty": sum(loc.empty for loc in self.locations),
        }
        return body
