"""What a run found and did, as frozen data, plus its text and JSON renderings.

Reports hold counts, locations and row ids. They never hold a key or a
plaintext, so any rendering of them is safe to print or file in a ticket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from keyrotate.rotation.failures import FailedSecret, summarise_failures
from keyrotate.rotation.revoke import describe as describe_revoked
from keyrotate.trek.catalogue import Presence

SCHEMA_VERSION = 1

# Characters that move the cursor, end a line or reorder text on a terminal or in a rendered ticket: a username
# holding "\r" or an escape sequence must not rewrite the lines of a report around it.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_HARMLESS = frozenset(" \u200c\u200d")  # space, and the joiners inside emoji and Indic names
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every control, line-separator and bidi character written as a visible escape."""
    if text.isprintable() and _BIDI_CONTROLS.isdisjoint(text):
        return text  # nearly every line: checked in C instead of one Python call per character
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char.isprintable() and char not in _BIDI_CONTROLS or char in _HARMLESS:
        return char
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def unopened_by_label(locations: Iterable[LocationResult]) -> dict[str, int]:
    return {loc.label: loc.unopened for loc in locations}


@dataclass(frozen=True)
class LocationResult:
    """Counts for one location. In a rotation, ``opened_by`` is per old key then the new key."""

    label: str
    table: str
    column: str
    catalogued: bool
    presence: Presence = Presence.ACTIVE
    note: str = ""
    opened_by: tuple[int, ...] = ()
    rewritten: int = 0
    plaintext: int = 0
    encrypted_plaintext: int = 0
    empty: int = 0
    unopened: int = 0

    @property
    def tokens(self) -> int:
        return sum(self.opened_by) + self.unopened


@dataclass(frozen=True)
class RotationReport:
    database: str
    trek_version: str
    key_sources: tuple[str, ...]  # old keys, then the new key: labels only
    dry_run: bool
    committed: bool
    locations: tuple[LocationResult, ...]
    failures: tuple[FailedSecret, ...] = ()
    backup: str | None = None
    restore_command: str | None = None
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
        body = asdict(self)
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
    database: str
    trek_version: str
    key_sources: tuple[str, ...]
    locations: tuple[LocationResult, ...]
    failures: tuple[FailedSecret, ...] = ()
    warnings: tuple[str, ...] = ()
    command: str = "verify"

    @property
    def catalogued_tokens(self) -> int:
        return sum(loc.tokens for loc in self.locations if loc.catalogued)

    @property
    def opened_by_first(self) -> int:
        return sum(loc.opened_by[0] for loc in self.locations if loc.catalogued and loc.opened_by)

    @property
    def ok(self) -> bool:
        """Every catalogued secret opens under the first key."""
        return self.opened_by_first == self.catalogued_tokens

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["schema_version"] = SCHEMA_VERSION
        body["ok"] = self.ok
        body["totals"] = {
            "catalogued_secrets": self.catalogued_tokens,
            "open_under_first_key": self.opened_by_first,
            "open_under_other_keys": sum(
                sum(loc.opened_by[1:]) for loc in self.locations if loc.catalogued and loc.opened_by
            ),
            "open_under_no_key": sum(loc.unopened for loc in self.locations if loc.catalogued),
            "plaintext": sum(loc.plaintext for loc in self.locations),
            "empty": sum(loc.empty for loc in self.locations),
        }
        return body


@dataclass(frozen=True)
class TextReport:
    """Lines for a human on stderr."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def __str__(self) -> str:
        return "\n".join(printable(line) for line in self.lines)


def _table(rows: Iterable[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = []
    for n, row in enumerate(rows):
        out.append("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out


def render_rotation(report: RotationReport, *, with_next_steps: bool = True) -> str:
    """The summary for stderr; ``with_next_steps=False`` when the caller prints its own, fuller steps."""
    text = TextReport()
    verb = "would be" if report.dry_run else "were"
    text.add(f"Database: {report.database} ({report.trek_version})")
    text.lines.extend(_rotation_table(report))
    text.add()
    text.add(f"{report.rotated} secrets {verb} re-encrypted; {report.already_new} already opened under the new key.")
    if report.outside_catalogue:
        text.add(f"{report.outside_catalogue} of them were found outside the catalogue (see the table).")
    if report.lookalikes:
        text.add(f"{report.lookalikes} value(s) look like tokens but open under no key; left as they are.")
    enc = sum(loc.encrypted_plaintext for loc in report.locations)
    plain = sum(loc.plaintext for loc in report.locations if loc.catalogued)
    if enc:
        text.add(f"{enc} plaintext value(s) {verb} encrypted under the new key.")
    elif plain:
        text.add(f"{plain} catalogued value(s) hold legacy plaintext; --encrypt-plaintext encrypts those TREK can read encrypted.")
    for failure, line in summarise_failures(report.failures, unopened_by_label(report.locations)):
        text.add(f"  {'FAILED' if failure.catalogued else 'left alone'}: {line}")
    for warning in report.warnings:
        text.add(f"WARNING: {warning}")
    text.lines.extend(report.notes)
    if report.old_key_saved:
        text.add(f"The old key is saved in {report.old_key_saved} (mode 0600): "
                 + ("the backup and " if report.backup else "") + "TREK's older backup ZIPs open only with it.")
    if report.backup:
        text.add(f"Backup (still readable with the OLD key; keep it safe or delete it): {report.backup}")
        text.add("To restore it" + (" and the old key" if report.old_key_saved else "") + " (TREK stopped), run:")
        text.add(f"    {report.restore_command}")
    if report.key_file_written:
        text.add(f"The new key is now in {report.key_file_written} (mode 0600).")
    if report.revoked:
        text.add(describe_revoked(report.revoked, dry_run=report.dry_run))
    if report.dry_run:
        text.add("Dry run: nothing was written.")
    elif report.committed:
        text.add("Committed" + (" and verified on a fresh connection." if report.verified_after_commit else "."))
    for step in report.next_steps if with_next_steps else ():
        text.add(f"Next: {step}")
    return str(text)


def _rotation_table(report: RotationReport) -> list[str]:
    rows = []
    for loc in report.locations:
        if loc.presence is not Presence.ACTIVE:
            continue
        if not loc.catalogued and not (loc.tokens or loc.rewritten):
            continue
        new = loc.opened_by[report.new_index] if loc.opened_by else 0
        rows.append((loc.label, str(loc.rewritten), str(new), str(loc.plaintext), str(loc.empty), str(loc.unopened)))
    lines = _table(rows, ("location", "rotated", "already new", "plaintext", "empty", "failed"))
    absent = [loc for loc in report.locations if loc.presence is not Presence.ACTIVE]
    if absent:
        lines.append(f"Not in this database or not encrypted by this TREK version: {len(absent)} catalogued locations "
                     "(see --json for each).")
    return lines


def render_verify(report: VerifyReport) -> str:
    text = TextReport()
    text.add(f"Database: {report.database} ({report.trek_version})")
    rows = []
    for loc in report.locations:
        if loc.presence is not Presence.ACTIVE or (not loc.catalogued and not loc.tokens):
            continue
        first = loc.opened_by[0] if loc.opened_by else 0
        other = sum(loc.opened_by[1:]) if loc.opened_by else 0
        rows.append((loc.label, str(first), str(other), str(loc.plaintext), str(loc.empty), str(loc.unopened)))
    text.lines.extend(_table(rows, ("location", "first key", "other key", "plaintext", "empty", "no key")))
    text.add()
    for failure, line in summarise_failures(report.failures, unopened_by_label(report.locations)):
        text.add(f"  {'NO KEY' if failure.catalogued else 'left alone'}: {line}")
    for warning in report.warnings:
        text.add(f"WARNING: {warning}")
    if report.ok:
        text.add(f"OK: the first key ({report.key_sources[0]}) opens all {report.catalogued_tokens} catalogued secrets.")
    else:
        text.add(
            f"NOT OK: the first key ({report.key_sources[0]}) opens {report.opened_by_first} of "
            f"{report.catalogued_tokens} catalogued secrets."
        )
    return str(text)
