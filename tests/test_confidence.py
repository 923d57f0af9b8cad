import math

import pytest

from caopd_pl.confidence import (
    CONFIDENCE_INSTRUCTION,
    find_confidence_key,
    format_confidence,
    parse_confidence,
    strip_confidence,
    with_instruction,
)


@pytest.mark.parametrize(
    "text, value, parsed",
    [
        ("Answer: 3\nConfidence: 0.75", 0.75, True),
        ("Confidence: 1.00", 1.0, True),
        ("Confidence: .5", 0.5, True),
        ("Confidence: 85%", 0.85, True),
        ("Confidence: 85", 0.85, True),  # a bare value in (1, 100] is a percentage
        ("Confidence: 250", 1.0, True),  # clipped
        ("Confidence: -0.3", 0.0, True),  # clipped
        ("Confidence: nan", 0.0, False),
        ("Confidence: inf", 0.0, False),
        ("Confidence: 0.2\nthen Confidence: 0.9", 0.9, True),  # the last value counts
        ("confidence: 0.4", 0.4, True),
        ("Confidence: **0.6**", 0.6, True),
        ("no confidence here", 0.0, False),
        ("Confidence: high", 0.0, False),
        ("Confidence: 0.8\nlater Confidence: information", 0.8, True),  # "inf" inside a word is no value
        ("overconfidence: 0.9", 0.0, False),  # the key is a word of its own
        ("", 0.0, False),
    ],
)
def test_parse_confidence(text, value, parsed):
    result = parse_confidence(text)
    assert result.parsed is parsed
    assert math.isclose(result.value, value, abs_tol=1e-9)


def test_parse_never_raises_on_non_strings():
    assert parse_confidence(None).parsed is False  # type: ignore[arg-type]


def test_strip_and_the_canonical_line():
    assert strip_confidence("Answer: 12\nConfidence: 1.00\n") == "Answer: 12"
    assert strip_confidence("Answer: 12") == "Answer: 12"
    assert format_confidence(0.375) == "Confidence: 0.38"
    assert format_confidence(0.5) == "Confidence: 0.50"


# The cases: the stripped text, and the value read, of each.
@pytest.mark.parametrize(
    "text, stripped, value",
    [
        ("Answer: 12\nconfidence: 0.9.", "Answer: 12", 0.9),  # lower case, trailing full stop
        ("Answer: 12\nConfidence: 0.3\nchecked again\nConfidence: 0.9", "Answer: 12", 0.9),  # several: read the last
        ("Answer: 12\n**Confidence:** 0.8", "Answer: 12", 0.8),  # no stray "**"
        ("Answer: 12\nConfidence**: 0.8", "Answer: 12", 0.8),
        ("Answer: 12 Confidence: 0.8", "Answer: 12", 0.8),  # on the answer's line
        ("Answer: 12\n- **Confidence**: 80%", "Answer: 12", 0.8),  # a list item
        ("Answer: 12\nCONFIDENCE : 0.7", "Answer: 12", 0.7),
        ("Answer: 12\nConfidence: high", "Answer: 12", 0.0),  # a key without a value still ends the text
    ],
)
def test_stripper_and_parser_share_one_key(text, stripped, value):
    assert strip_confidence(text) == stripped
    assert parse_confidence(text).value == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    [
        "def f(x, confidence: float) -> float:",  # an annotated parameter mid-line is no key
        "Let me weigh my confidence: it is moderate.",
        "min_confidence: 0.8",  # part of a longer word
        '{"confidence": 0.8}',  # a JSON key
    ],
)
def test_prose_and_code_are_not_keys(text):
    assert find_confidence_key(text) is None and strip_confidence(text) == text


def test_format_rejects_out_of_range():
    with pytest.raises(ValueError, match="confidence"):
        format_confidence(1.2)
    with pytest.raises(ValueError, match="confidence"):
        format_confidence(float("nan"))


def test_instruction_is_appended():
    assert with_instruction("What is 2+2?  ") == f"What is 2+2?\n\n{CONFIDENCE_INSTRUCTION}"
