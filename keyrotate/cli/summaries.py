"""Text summaries of a rotation and a verification, for stderr."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from keyrotate.cli.printable import printable
from keyrotate.rotation.failures import summarise_failures
from keyrotate.rotation.report import RotationReport, VerifyReport, unopened_by_label
from keyrotate.rotation.revoke import describe as describe_revoked
from keyrotate.store.files import mode_of
from keyrotate.trek.catalogue import Presence


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
        if report.restore_needs_old_key:
            text.add(f"To restore it (TREK stopped), put the old key back in {report.key_file_written} too: the backup "
                     "opens only with it, and keyrotate did not save it (--discard-old-key). Then run:")
        else:
            text.add("To restore it" + (" and the old key" if report.old_key_saved else "") + " (TREK stopped), run:")
        text.add(f"    {report.restore_command}")
    if report.key_file_written:
        text.add(f"The new key is now in {report.key_file_written} ({mode_of(report.key_file_written)}).")
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
            f"{report.catalogued_tokens} catalogued secrets"
            + (f"; {report.outside_unopened} token(s) outside the catalogue open under no key."
               if report.outside_unopened else ".")
        )
    return str(text)
