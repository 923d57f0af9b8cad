"""Exact-answer verifier: the embedded arithmetic task's judge.

The answer is the integer after the last ``Answer:`` (or, without one, the last integer) of the completion, compared
with the reference as an integer. The base class hands ``verify`` the completion without its confidence line.
"""

from __future__ import annotations

import re
from typing import Any

from caopd_pl.verifiers.base import Verdict, Verifier

_ANSWER = re.compile(r"Answer:[ \t]{0,8}(-?\d{1,40})")
_INTEGER = re.compile(r"-?\d{1,40}")


def extract_integer_answer(completion: str) -> str | None:
    """The final integer answer of a completion without its confidence line, or None when it states none."""
    answers = _ANSWER.findall(completion)
    if answers:
        return answers[-1]
    numbers = _INTEGER.findall(completion)
    return numbers[-1] if numbers else None


class ExactAnswerVerifier(Verifier):
    """Correct when the completion's final integer equals the reference integer."""

    name = "exact"

    def verify(self, completion: str, reference: Any) -> Verdict:
        answer = extract_integer_answer(completion)
        if answer is None:
            return Verdict(False, "no answer found")
        return Verdict(int(answer) == int(reference), f"answer={answer}")
