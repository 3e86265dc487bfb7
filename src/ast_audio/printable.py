"""Text for a log line: one line, whatever a file name holds."""

from __future__ import annotations

import unicodedata

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with control characters, line and paragraph separators (U+2028, U+2029) and lone surrogates (the
    bytes of a name that are not UTF-8) written as escapes, as `repr` writes them (\\n, \\x1b, \\u2028, \\udcff):
    a file name holding a newline cannot split or forge a log line."""
    if text.isprintable():
        return text
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    if unicodedata.category(char) not in ("Cc", "Zl", "Zp", "Cs"):
        return char
    return _ESCAPES.get(char, repr(char)[1:-1])
