"""Exact text verifier: the generated string tasks' judge (:mod:`caopd_pl.tasks.strings`).

The answer is the text after the last ``Answer:`` of the completion, up to the end of that line, with surrounding
whitespace removed; it must equal ``str(reference)`` exactly (case-sensitive). The base class hands ``verify`` the
completion without its confidence (everything before the first confidence key, so a confidence on the answer's line
is not part of the answer).
"""

from __future__ import annotations

import re
from typing import Any

from caopd_pl.verifiers.base import Verdict, Verifier

_ANSWER = re.compile(r"Answer:[ \t]{0,8}([^\n]{0,200})")


def extract_text_answer(completion: str) -> str | None:
    """The text of the last ``Answer:`` line of a completion without its confidence, stripped, or None when it
    states none."""
    answers = _ANSWER.findall(completion)
    return answers[-1].strip() if answers else None


class AnswerTextVerifier(Verifier):
    """Correct when the completion's final ``Answer:`` text equals the reference's string form."""

    name = "answer_text"

    def verify(self, completion: str, reference: Any) -> Verdict:
        answer = extract_text_answer(completion)
        if answer is None:
            return Verdict(False, "no answer found")
        return Verdict(answer == str(reference), f"answer={answer!r}")
