"""tools/controlroom/escape.py: device-supplied text as the operator sees it (issue 9 item 4)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pinkbutton.tools.controlroom.escape import BIDI_CONTROLS, shown


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Qissa Khwani Bazaar, Peshawar", "Qissa Khwani Bazaar, Peshawar"),
        ("قصہ خوانی بازار", "قصہ خوانی بازار"),  # Urdu stays readable
        ("Bazaar\nACK    pb-x  by officer-x", "Bazaar\\nACK    pb-x  by officer-x"),
        ("a\rb\tc\x00d", "a\\rb\\tc\\x00d"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("c1\x9bx\x85y\x7f", "c1\\x9bx\\x85y\\x7f"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("\u2066iso\u2069 \u200f", "\\u2066iso\\u2069 \\u200f"),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("back\\slash", "back\\\\slash"),
        ("", ""),
    ],
)
def test_shown_escapes_what_could_steer_a_terminal(raw, expected):
    assert shown(raw) == expected


def test_shown_caps_the_length_and_says_so():
    out = shown("x" * 1000, limit=50)
    kept, left_out = out.split("…(+")
    assert len(out) <= 50 and len(kept) >= 40 and set(kept) == {"x"}
    assert left_out.endswith(")") and len(kept) + int(left_out[:-1]) == 1000
    assert shown("x" * 50, limit=50) == "x" * 50
    # An escape is never cut in half.
    cut = shown("\x1b" * 100, limit=30)
    assert cut.replace("\\x1b", "").startswith("…"), cut


def test_shown_accepts_anything():
    assert shown(None) == "None"
    assert shown({"k": "a\nb"}) == "{'k': 'a\\\\nb'}"  # repr first, then escaped


def _dangerous(c: str) -> bool:
    cat = unicodedata.category(c)
    return cat in ("Cc", "Cs", "Zl", "Zp") or c in BIDI_CONTROLS


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_shown_output_is_one_safe_line(text):
    out = shown(text, limit=10_000)
    assert not any(_dangerous(c) for c in out), out
    assert len(out.splitlines()) <= 1
    out.encode("utf-8")  # a strict terminal encoding never raises


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_shown_is_injective(a, b):
    if a != b:
        assert shown(a, limit=10_000) != shown(b, limit=10_000)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(10, 300))
def test_shown_never_exceeds_its_limit(text, limit):
    assert len(shown(text, limit=limit)) <= limit
