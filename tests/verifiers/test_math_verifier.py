"""Math verifier: the documented answer rule, math-verify equivalence, and bounded cost on pathological inputs."""

from __future__ import annotations

import time

import pytest

from caopd_pl.confidence import strip_confidence
from caopd_pl.verifiers import build
from caopd_pl.verifiers.math import MathVerifier, extract_math_answer


@pytest.fixture(scope="module")
def verifier():
    verifier = MathVerifier(timeout=2.0, workers=2)
    yield verifier
    verifier.close()


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("so \\boxed{1} then \\boxed{\\frac{1}{2}}\nConfidence: 0.9", "\\frac{1}{2}"),
        ("nested \\boxed{\\sqrt{\\frac{a}{b}}} done", "\\sqrt{\\frac{a}{b}}"),
        ("\\boxed{3} and an unbalanced \\boxed{4", "3"),
        ("The final answer is: $\\pi/2$.\nConfidence: 0.4", "\\pi/2"),
        ("**The answer is** 12.", "12"),
        ("We get 3, then 1,250 apples\nConfidence: 0.75", "1250"),
        ("ratio 3/4", "3/4"),
        ("no digits at all\nConfidence: 0.8", None),
        ("", None),
    ],
)
def test_answer_rule(completion, answer):
    assert extract_math_answer(strip_confidence(completion)) == answer  # the text the base class hands verify


def test_confidence_number_is_never_the_answer():
    verdict = MathVerifier(workers=1).verify("I am not sure.\nConfidence: 0.85", "0.85")
    assert not verdict.correct and verdict.status == "wrong"


@pytest.mark.parametrize(
    ("completion", "reference", "correct"),
    [
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("The answer is 0.5", "\\frac{1}{2}", True),
        ("\\boxed{x^2 + 2x + 1}", "(x+1)^2", True),
        ("so 7\nConfidence: 1.0", 7, True),
        ("\\boxed{\\{1, 2\\}}", "\\{2, 1\\}", True),
        ("\\boxed{0.49}", "1/2", False),
        ("\\boxed{x^2 + 1}", "(x+1)^2", False),
        ("so 8\nConfidence: 0.9", "7", False),
        ("I give up.\nConfidence: 0.1", "7", False),
    ],
)
def test_verdicts(verifier, completion, reference, correct):
    assert verifier.verify_batch([completion], [reference])[0].correct is correct


def test_reference_dict_and_registry_name():
    verifier = build("math", timeout=2.0, workers=1)
    try:
        assert verifier.verify("\\boxed{2}", {"answer": "2"}).correct
    finally:
        verifier.close()


@pytest.mark.slow
def test_pathological_inputs_cost_at_most_the_deadline(verifier):
    nasty = ["\\boxed{9^{9^{9^9}}}", "\\boxed{" + "(" * 500 + "1" + ")" * 500 + "}", "\\boxed{" + "{" * 500 + "1"]
    start = time.monotonic()
    verdicts = verifier.verify_batch([*nasty, "\\boxed{2}"], ["3", "1", "7", "2"])
    elapsed = time.monotonic() - start
    assert [v.correct for v in verdicts] == [False, False, False, True]
    assert elapsed < 2 * verifier.timeout + 5  # two workers: at most two deadlines in sequence, plus restarts
    assert all(v.detail.startswith(("timeout:", "answer=", "error:")) for v in verdicts[:3])
    assert verdicts[0].status == "timeout" and verifier.timeouts >= 1  # 9^(9^(9^9)) never finishes


def test_bad_reference_is_an_error_verdict_not_an_exception(verifier):
    verdict = verifier.verify_batch(["\\boxed{1}"], [None])[0]
    assert not verdict.correct and verdict.status == "error"


@pytest.mark.slow
def test_close_releases_and_next_batch_restarts(verifier):
    verifier.close()
    assert verifier._pool is None
    assert verifier.verify_batch(["\\boxed{4}"], ["4.0"])[0].correct


def test_constructor_validates():
    with pytest.raises(ValueError, match="timeout"):
        MathVerifier(timeout=0)
