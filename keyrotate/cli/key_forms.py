"""The other form of a suspected key worth trying, and the words for what it opens: a pasted key trimmed, a key file's
exact text untrimmed. Used by ``exposure``, ``rotate --incident``, and the wrong-key hints (:mod:`keyrotate.cli.wrong_key`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from keyrotate.cli.running import warn
from keyrotate.trek.keys import Key, js_trim

if TYPE_CHECKING:
    from keyrotate.operations.exposure import ExposureReport


@dataclass(frozen=True)
class OtherForm:
    """A key added to the ones given: ``given`` as the operator gave it; the added one is its key file's exact text
    (``untrimmed``) or else ``given`` trimmed."""

    given: Key
    untrimmed: bool


def with_other_forms(keys: list[Key]) -> dict[int, OtherForm]:
    """Add to ``keys`` the other form of each one that has one; returns each added key's index -> its form.

    A key given with whitespace or a BOM at either end (pasted with its line break) is tried trimmed: TREK reads
    .encryption_key trimmed, and whoever holds the leaked text can trim it. A key read from a file whose exact text
    TREK's trimming changes is tried untrimmed: TREK given ENCRYPTION_KEY with whitespace uses it as is and writes
    it into the file. The given key comes first, so what the added one opens, the given one does not."""
    added: dict[int, OtherForm] = {}
    for key in list(keys):
        text = js_trim(key.reveal())  # never empty: a Key is not
        untrimmed = text == key.reveal()
        other = key.untrimmed() if untrimmed else Key(text, f"{key.source} (trimmed)")
        if other is not None and not any(k.same_secret_as(other) for k in keys):
            added[len(keys)] = OtherForm(key, untrimmed)
            keys.append(other)
    return added


def say_what_other_forms_opened(report: ExposureReport, forms: dict[int, OtherForm]) -> None:
    """A warning per added form that opened something: which form, and why that matters."""
    for index, form in forms.items():
        opened = report.opened_by_key[index] if index < len(report.opened_by_key) else 0
        if not opened:
            continue
        if form.untrimmed:
            warn(f"the key file of the {form.given.source} has whitespace at its start or end, which TREK strips when "
                 f"it reads the file. Its exact text, untrimmed, opens {opened} secret(s) the trimmed key does not: TREK was "
                 "given ENCRYPTION_KEY with that whitespace (it uses the variable as is and writes it into the file), "
                 "and anyone holding the file holds it. They are in this report, opened with "
                 f"\"{form.given.source} (untrimmed)\".")
        else:
            warn(f"the {form.given.source} has whitespace at its start or end (a line break from "
                 f"pasting?). Trimmed, as TREK reads .encryption_key and as anyone holding it would, it opens "
                 f"{opened} secret(s) the key as given does not: they are in this report, opened with "
                 f"\"{form.given.source} (trimmed)\".")


def untrimmed_opens(key: Key, opened: int, *, in_use: bool) -> str:
    """The sentence for a ``key`` read trimmed from a key file whose exact text opens ``opened`` catalogued secrets,
    and what to do, naming no key. ``in_use``: said by verify (TREK may be running on that text); else to a
    rotation's old key."""
    found = (f"Untrimmed, the exact text of the key file ({key.source}) opens {opened} catalogued secret(s): it has "
             "whitespace at its start or end, which TREK strips when it reads the file, so TREK was given ENCRYPTION_KEY "
             "with that whitespace (TREK uses the variable as is and writes it into .encryption_key). TREK must be "
             "given the key as it uses it: ")
    old_key = "--old-key-env NAME, NAME holding that exact text (key files are read trimmed)"
    if in_use:
        return found + ("keep ENCRYPTION_KEY in TREK's environment exactly as it is (removed or trimmed, TREK reads "
                        f"the file trimmed and no secret). To be rid of the whitespace, rotate with {old_key}, then "
                        "set ENCRYPTION_KEY to the new key or remove it.")
    return found + (f"give the old key with {old_key}; after the rotation set ENCRYPTION_KEY in TREK's environment "
                    "to the new key exactly, or remove it.")
