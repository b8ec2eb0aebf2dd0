"""Device-supplied text as the operator sees it: one escaping function for every output.

A kiosk's site name, fault text or event detail is untrusted: it reaches the operator's
terminal, the report, the logs (and later the web console). `shown()` makes it one
printable line that cannot steer a terminal or forge a line:

- C0 and C1 control characters, DEL, ESC, CR, LF, NUL become `\\xNN` (`\\n`, `\\r`, `\\t`);
- bidi overrides, embeddings, isolates and marks (U+202E ...) and the Unicode line and
  paragraph separators become `\\uNNNN`, as do lone surrogates (`\\ud800`), which a strict
  UTF-8 terminal would refuse to print;
- a backslash becomes `\\\\`, so the escaping is injective: two different texts never show
  the same;
- the result is at most `limit` characters; a cut text ends in `…(+N)`, N the characters
  left out, and an escape is never cut in half.

Everything else, Urdu and other scripts included, is shown as it is.
"""

from __future__ import annotations

import re

# Bidi controls (Unicode TR9): embeddings/overrides, isolates, and the implicit marks.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
DEFAULT_LIMIT = 320  # a 256-character site name with some escapes still fits

_UNSAFE = re.compile(
    "[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
    + "".join(sorted(BIDI_CONTROLS)) + "]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def shown(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """`value` (str, or anything: its repr) as one safe line of at most `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    out = _UNSAFE.sub(lambda m: _escape(m.group()), text)
    if len(out) <= limit:
        return out
    budget = limit - len(f"…(+{len(text)})")  # room left for the text itself
    parts: list[str] = []
    used = 0
    for i, c in enumerate(text):
        piece = _escape(c) if _UNSAFE.match(c) else c
        if used + len(piece) > budget:
            return "".join(parts) + f"…(+{len(text) - i})"
        parts.append(piece)
        used += len(piece)
    return "".join(parts)  # not reached: the whole text was longer than the limit
