"""The stated-confidence format: the instruction added to prompts, the parser, and the strip-and-replace edit.

Every completion ends with a line ``Confidence: <number in [0, 1]>``. The parser reads the *last* such value and
never raises on model text: it uses bounded regular expressions, and maps percentages (``85%``), values above 1,
negatives, ``nan`` and ``inf`` to a documented outcome (see :func:`parse_confidence`).
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

# Bounded: at most 32 digits on each side of the decimal point, an optional percent sign, and the special words.
_VALUE = re.compile(
    r"Confidence:[ \t*]{0,8}(?P<value>[+-]?(?:\d{1,32}(?:\.\d{0,32})?|\.\d{1,32}|nan|inf(?:inity)?)"
    r"(?:[eE][+-]?\d{1,3})?)[ \t]{0,4}(?P<percent>%)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedConfidence:
    """A confidence read from a completion."""

    value: float
    """The confidence in [0, 1]; 0.0 when none could be parsed (the metrics' convention)."""
    parsed: bool
    """Whether a finite ``Confidence:`` value was found (format adherence)."""


def parse_confidence(text: str) -> ParsedConfidence:
    """Read the last ``Confidence:`` value of ``text``.

    Rules: a value followed by ``%`` is divided by 100; a plain value above 1 and at most 100 is read as a percent
    (models often write ``Confidence: 85``); anything else is clipped to [0, 1]; ``nan``, ``inf`` or no value at all
    give ``ParsedConfidence(0.0, parsed=False)``. Never raises.

    Returns:
        The parsed confidence and whether the completion followed the format.
    """
    if not isinstance(text, str):
        return ParsedConfidence(0.0, False)
    last = None
    for last in _VALUE.finditer(text):
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
    """Drop everything from the last ``Confidence:`` onward, and trailing white space."""
    cut = text.rfind(CONFIDENCE_KEY)
    return (text if cut < 0 else text[:cut]).rstrip()


def format_confidence(value: float) -> str:
    """The canonical confidence line, two decimals: ``Confidence: 0.62``."""
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"confidence must be a number in [0, 1], got {value!r}")
    return f"{CONFIDENCE_KEY} {value:.2f}"


def replace_confidence(text: str, value: float) -> str:
    """``text`` with its confidence (if any) replaced by ``value``, as the last line."""
    return f"{strip_confidence(text)}\n{format_confidence(value)}"


def with_instruction(question: str) -> str:
    """A question with the confidence instruction appended (the student's plain prompt)."""
    return f"{question.rstrip()}\n\n{CONFIDENCE_INSTRUCTION}"
