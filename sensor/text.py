"""Text off the wire, made safe to show: one JSON encoder for every JSON line the sensor
writes, and one escaper for text written to a terminal.

Strings in events (ServerName, pipe and user names, file names) are chosen by whoever sent the
traffic. JSON keeps them exact, but a raw bidi override (U+202E), C1 control (U+009B is a CSI
on some terminals), DEL or line separator (U+2028) is rendered by viewers and SIEM consoles.
``json_line`` escapes every character Python calls non-printable (categories Cc, Cf, Zl, Zp,
Zs other than space, Cs, Co, Cn) as ``\\uXXXX``, so ``json.loads`` gives back the same string,
while printable non-ASCII (accents, CJK) stays readable.
"""
from __future__ import annotations

import json
import re

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
# Every character that could need escaping: DEL and everything outside ASCII. The C0 controls
# are already escaped by the JSON encoder itself. Written as the complement of 0-0x7E: the
# same set as the range 0x7F-0x10FFFF, which the re module takes ~4 ms to compile at import.
_MAYBE_UNSAFE = re.compile("[^\x00-\x7e]")


def _escape(match: re.Match) -> str:
    char = match.group()
    if char.isprintable():
        return char
    code = ord(char)
    if code > 0xFFFF:       # JSON's \u takes 16 bits: a UTF-16 surrogate pair (RFC 8259 section 7)
        code -= 0x10000
        return "\\u%04x\\u%04x" % (0xD800 | code >> 10, 0xDC00 | code & 0x3FF)
    return "\\u%04x" % code


def json_line(value, ascii_only: bool = False) -> str:
    """``value`` as one compact JSON line with every non-printable character escaped
    (``ascii_only``: every non-ASCII one too, for syslog)."""
    if ascii_only:
        return _encode_ascii(value).replace("\x7f", "\\u007f")
    text = _encode(value)
    # The common case (plain ASCII, no DEL) is two C-speed scans and no regex.
    if text.isascii() and "\x7f" not in text:
        return text
    return _MAYBE_UNSAFE.sub(_escape, text)


def printable(text: str) -> str:
    """``text`` for a terminal: non-printable characters (ESC, CR, LF, bidi overrides) shown as
    Python escapes (``\\x1b``, ``\\n``, ``\\u202e``), never sent raw."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
