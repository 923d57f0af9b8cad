"""Exact-answer verifier: the embedded arithmetic task's judge.

The answer is the integer after the last ``Answer:`` (or, without one, the last integer) of the completion without its
confidence (:func:`caopd_pl.confidence.strip_confidence`: everything before the first confidence key, in any case),
compared with the reference as an integer.
"""

from __future__ import annotations

import re
from typing import Any

from caopd_pl.confidence import strip_confidence
from caopd_pl.verifiers.base import Verdict, Verifier
from caopd_pl.verifiers.registry import register

_ANSWER = re.compile(r"Answer:[ \t]{0,8}(-?\d{1,40})")
_INTEGER = re.compile(r"-?\d{1,40}")


def extract_integer_answer(completion: str) -> str | None:
    """The final integer answer of a completion, or None when it states none."""
    body = strip_confidence(completion)
    answers = _ANSWER.findall(body)
    if answers:
        return answers[-1]
    numbers = _INTEGER.findall(body)
    return numbers[-1] if numbers else None


@register("exact")
class ExactAnswerVerifier(Verifier):
    """Correct when the completion's final integer equals the reference integer."""

    def verify(self, completion: str, reference: Any) -> Verdict:
        answer = extract_integer_answer(completion)
        if answer is None:
            return Verdict(False, "no answer found")
        return Verdict(int(answer) == int(reference), f"answer={answer}")
