"""Exact text verifier: the generated string tasks' judge (:mod:`caopd_pl.tasks.strings`).

The answer is the text after the last ``Answer:`` of the completion without its confidence
(:func:`caopd_pl.confidence.strip_confidence`: everything before the first confidence key, in any case, so a
confidence on the answer's line is not part of the answer), up to the end of that line, with surrounding whitespace
removed; it must equal ``str(reference)`` exactly (case-sensitive).
"""

from __future__ import annotations

import re
from typing import Any

from caopd_pl.confidence import strip_confidence
from caopd_pl.verifiers.base import Verdict, Verifier
from caopd_pl.verifiers.registry import register

_ANSWER = re.compile(r"Answer:[ \t]{0,8}([^\n]{0,200})")


def extract_text_answer(completion: str) -> str | None:
    """The text of the last ``Answer:`` line of a completion, stripped, or None when it states none."""
    body = strip_confidence(completion)
    answers = _ANSWER.findall(body)
    return answers[-1].strip() if answers else None


@register("answer_text")
class AnswerTextVerifier(Verifier):
    """Correct when the completion's final ``Answer:`` text equals the reference's string form."""

    def verify(self, completion: str, reference: Any) -> Verdict:
        answer = extract_text_answer(completion)
        if answer is None:
            return Verdict(False, "no answer found")
        return Verdict(answer == str(reference), f"answer={answer!r}")
