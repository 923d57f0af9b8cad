import math

import pytest

from caopd_pl.confidence import (
    CONFIDENCE_INSTRUCTION,
    format_confidence,
    parse_confidence,
    replace_confidence,
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
        ("", 0.0, False),
    ],
)
def test_parse_confidence(text, value, parsed):
    result = parse_confidence(text)
    assert result.parsed is parsed
    assert math.isclose(result.value, value, abs_tol=1e-9)


def test_parse_never_raises_on_non_strings():
    assert parse_confidence(None).parsed is False  # type: ignore[arg-type]


def test_strip_and_replace():
    text = "Answer: 12\nConfidence: 1.00\n"
    assert strip_confidence(text) == "Answer: 12"
    assert replace_confidence(text, 0.375) == "Answer: 12\nConfidence: 0.38"
    assert replace_confidence("Answer: 12", 0.5) == "Answer: 12\nConfidence: 0.50"


def test_format_rejects_out_of_range():
    with pytest.raises(ValueError, match="confidence"):
        format_confidence(1.2)
    with pytest.raises(ValueError, match="confidence"):
        format_confidence(float("nan"))


def test_instruction_is_appended():
    assert with_instruction("What is 2+2?  ") == f"What is 2+2?\n\n{CONFIDENCE_INSTRUCTION}"
