"""The stated-confidence format: the instruction added to prompts, the parser, the stripper and the canonical line.

Every completion should end with a line ``Confidence: <number in [0, 1]>``. Models also write ``confidence: 0.9.``,
``**Confidence:** 0.8``, ``Confidence**: 0.8``, ``- Confidence: 80%``, put the confidence on the answer's line, or
state it twice. One definition of *the confidence key* serves the parser, the stripper, the verifiers that judge a
completion's answer (they judge :func:`strip_confidence` of it) and, through the parser, the metrics:

  * a **key** is the word ``confidence`` in any case (not inside a longer word), optionally wrapped in markdown
    emphasis (``*``, ``_``) on either side, followed by ``:``; it counts when it starts a line (after at most 3
    spaces of indentation and an optional list or heading marker: ``-``, ``*``, ``+``, ``>``, ``#``, ``1.``), whatever
    follows, or, anywhere else, when a number follows it (``Answer: 42 Confidence: 0.9``). A mid-line
    ``confidence:`` not followed by a number (``def f(x, confidence: float)``, "my confidence: moderate") is prose,
    not a key;
  * **the value** (:func:`parse_confidence`) is the number after the *last* key that has one, as the paper's
    evaluation reads it;
  * **the stripped text** (:func:`strip_confidence`) is everything before the *first* key, without trailing white
    space: no earlier confidence line survives into a revised target, and the list marker or emphasis that opened
    the key goes with it (no stray ``**``). A completion must therefore state its answer before its confidence, as
    the instruction asks; an answer written after a first confidence key is not judged.

The parser never raises on model text: it uses bounded regular expressions, and maps percentages (``85%``), values
above 1, negatives, ``nan`` and ``inf`` to a documented outcome (see :func:`parse_confidence`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

CONFIDENCE_KEY = "Confidence:"

CONFIDENCE_INSTRUCTION = (
    "End your response with a final line 'Confidence: <a number between 0 and 1>' "
    "giving the probability that your answer is correct."
)

# Every quantifier is bounded, so a megabyte of adversarial text is scanned in linear time.
_WORD = r"(?<![a-z0-9_*])[*_]{0,3}confidence[ \t]{0,3}[*_]{0,3}[ \t]{0,3}:[*_]{0,3}"
_NUMBER = (
    r"[ \t*_]{0,8}(?P<value>[+-]?(?:\d{1,32}(?:\.\d{0,32})?|\.\d{1,32}|(?:nan|inf(?:inity)?)(?![a-z]))"
    r"(?:[eE][+-]?\d{1,3})?)[ \t]{0,4}(?P<percent>%)?"
)
_LINE_START = r"^[ \t]{0,3}(?:(?:[-*+>]|#{1,6}|\d{1,3}[.)])[ \t]{1,3})?"
_FIRST_KEY = re.compile(rf"{_LINE_START}{_WORD}|{_WORD}(?={_NUMBER})", re.IGNORECASE | re.MULTILINE)
_KEY_VALUE = re.compile(rf"{_WORD}{_NUMBER}", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedConfidence:
    """A confidence read from a completion."""

    value: float
    """The confidence in [0, 1]; 0.0 when none could be parsed (the metrics' convention)."""
    parsed: bool
    """Whether a finite ``Confidence:`` value was found (format adherence)."""


def find_confidence_key(text: str) -> int | None:
    """Where the first confidence key of ``text`` starts (its line start for a key that opens a line), or None."""
    match = _FIRST_KEY.search(text)
    return None if match is None else match.start()


def parse_confidence(text: str) -> ParsedConfidence:
    """Read the value after the last confidence key of ``text`` that is followed by a number.

    Rules: a value followed by ``%`` is divided by 100; a plain value above 1 and at most 100 is read as a percent
    (models often write ``Confidence: 85``); anything else is clipped to [0, 1]; ``nan``, ``inf`` or no value at all
    give ``ParsedConfidence(0.0, parsed=False)``. Never raises.

    Returns:
        The parsed confidence and whether the completion followed the format.
    """
    if not isinstance(text, str):
        return ParsedConfidence(0.0, False)
    last = None
    for last in _KEY_VALUE.finditer(text):
        pass
    if last is None:
        return ParsedConfidence(0.0, False)
    try:
        value = float(last.group("value"))
    except ValueError:
        return ParsedConfidence(0.0, False)
    if not math.isfinite(value):
        return ParsedConfidence(0.0, False)
    if last.group("percent") or 1.0 < value <= 100.0:
        value /= 100.0
    return ParsedConfidence(min(max(value, 0.0), 1.0), True)


def strip_confidence(text: str) -> str:
    """``text`` before its first confidence key (see the module docstring), without trailing white space."""
    cut = find_confidence_key(text)
    return (text if cut is None else text[:cut]).rstrip()


def format_confidence(value: float) -> str:
    """The canonical confidence line, two decimals: ``Confidence: 0.62``."""
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"confidence must be a number in [0, 1], got {value!r}")
    return f"{CONFIDENCE_KEY} {value:.2f}"


def with_instruction(question: str) -> str:
    """A question with the confidence instruction appended (the student's plain prompt)."""
    return f"{question.rstrip()}\n\n{CONFIDENCE_INSTRUCTION}"
