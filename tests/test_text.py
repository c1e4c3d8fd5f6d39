"""sensor.text: the one JSON encoder of every output line, and the terminal escaper."""
from __future__ import annotations

import json
import random

from sensor.text import json_line, printable


def test_every_code_point_round_trips_and_no_non_printable_one_stays_raw():
    # All of Unicode in a few strings. Surrogates apart: a high one followed by a low one is
    # one character once written as JSON escapes (as with json.dumps), so they are tested alone.
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    for start in range(0, len(chars), 0x8000):
        text = "".join(chars[start:start + 0x8000])
        line = json_line({"s": text})
        assert line.isprintable()
        assert json.loads(line) == {"s": text}
    for lone in ("\ud800", "\udfff", "a\udc00b"):
        assert json.loads(json_line(lone)) == lone and json_line(lone).isascii()


def test_rendered_characters_become_escapes_and_printable_text_stays_readable():
    line = json_line(["\u202e", "\x9b", "\x7f", "\u2028", "\x1b[2J", "\U000e0041", "J\xfcrgen \u4e2d"])
    assert line == '["\\u202e","\\u009b","\\u007f","\\u2028","\\u001b[2J","\\udb40\\udc41","J\xfcrgen \u4e2d"]'
    ascii_line = json_line(["\x7f\xfc\u202e"], ascii_only=True)
    assert ascii_line == '["\\u007f\\u00fc\\u202e"]'


def test_random_strings_round_trip():
    rng = random.Random(18)
    for _ in range(2000):
        text = "".join(chr(rng.choice([rng.randrange(0x80), rng.randrange(0x80, 0x3000),
                                       rng.randrange(0xE000, 0x10000), rng.randrange(0x10000, 0x110000)]))
                       for _ in range(rng.randrange(1, 12)))
        line = json_line({"k": text, "n": [1, None, True]})
        assert line.isprintable() and json.loads(line) == {"k": text, "n": [1, None, True]}


def test_printable_escapes_terminal_controls():
    assert printable("x.pcap") == "x.pcap"
    assert printable("a\x1b[2Jb\nc\u202e.pcap") == "a\\x1b[2Jb\\nc\\u202e.pcap"
