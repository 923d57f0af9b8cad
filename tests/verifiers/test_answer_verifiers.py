"""The `exact` and `answer_text` verifiers read the answer before the confidence key, as the stripper defines it: the
base class hands ``verify`` the completion without its confidence, and the answer rules read that."""

from __future__ import annotations

import pytest

from caopd_pl.confidence import strip_confidence
from caopd_pl.verifiers.answer_text import AnswerTextVerifier, extract_text_answer
from caopd_pl.verifiers.exact import ExactAnswerVerifier, extract_integer_answer


@pytest.mark.parametrize(
    "completion, answer",
    [
        ("3+4=7\nAnswer: 7\nConfidence: 0.9", "7"),
        ("The sum is 7\nconfidence: 0.9.", "7"),  # lower case: the 9 of 0.9 is not the answer
        ("The sum is 7 Confidence: 80%", "7"),  # on the answer's line
        ("The sum is 7\n**Confidence:** 0.8", "7"),
        ("The sum is 7\nConfidence: 0.3\n... no, 8\nConfidence: 0.9", "7"),  # only before the first key
        ("Answer: -12", "-12"),
        ("no number\nConfidence: 0.5", None),
    ],
)
def test_integer_answer(completion, answer):
    assert extract_integer_answer(strip_confidence(completion)) == answer


@pytest.mark.parametrize(
    "completion, answer",
    [
        ("Answer: cba\nConfidence: 0.9", "cba"),
        ("Answer: cba confidence: 0.9", "cba"),  # same line, lower case
        ("Answer: cba **Confidence:** 0.8", "cba"),  # no stray "**" in the answer
        ("Answer: cba Confidence**: 0.8", "cba"),
        ("Answer: cba\nCONFIDENCE: 0.2\nAnswer: abc", "cba"),
        ("cba\nConfidence: 0.9", None),
    ],
)
def test_text_answer(completion, answer):
    assert extract_text_answer(strip_confidence(completion)) == answer


def test_verdicts():
    assert ExactAnswerVerifier().verify("The sum is 7\nconfidence: 0.9", 7).correct
    assert AnswerTextVerifier().verify("Answer: cba **Confidence:** 0.8", "cba").correct
    assert not AnswerTextVerifier().verify("Answer: abc\nConfidence: 1.00", "cba").correct
