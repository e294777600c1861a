"""Text safe to print, or to open in a spreadsheet: control, line-separator and bidi characters shown as visible
escapes."""

from __future__ import annotations

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


# A spreadsheet runs a cell that starts with one of these as a formula (a username "=HYPERLINK(...)" in a CSV report
# opened in Excel or LibreOffice). A leading apostrophe makes such a cell text there; a tab or a carriage return,
# the other starts that do harm, never reach a cell: printable() escapes them.
_FORMULA_STARTS = ("=", "+", "-", "@")


def csv_cell(text: str) -> str:
    """``printable(text)``, with a leading apostrophe when a spreadsheet would run it as a formula."""
    cell = printable(text)
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell
