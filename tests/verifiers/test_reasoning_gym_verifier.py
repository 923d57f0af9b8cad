"""The ``reasoning_gym`` verifier: which text is the answer, scoring by the generator's own ``score_answer`` in
workers with a deadline, and the failures it reports instead of raising."""

from __future__ import annotations

import subprocess
import sys

import pytest

from caopd_pl.confidence import strip_confidence
from caopd_pl.verifiers import available, build
from caopd_pl.verifiers.reasoning_gym import ReasoningGymVerifier, extract_answer, readings, score_here


def reference(dataset: str, answer: str, metadata: dict | None = None, config: dict | None = None) -> dict:
    """A reference as the task writes it, for an entry made by hand."""
    entry = {"question": "?", "answer": answer, "metadata": metadata or {}}
    return {"dataset": dataset, "config": config or {}, "entry": entry}


@pytest.fixture(scope="module")
def verifier():
    with build("reasoning_gym", workers=1) as built:
        yield built


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("7 + 5 = 12\nAnswer: 12", "12"),
        ("**Answer:** 12", "12"),
        ("**Answer**: 12", "12"),
        ("Final answer: 12.", "12."),
        ("ANSWER: $12$", "$12$"),
        ("Answer: 3\nwait, no.\nAnswer: 12\nConfidence: 0.7", "12"),  # the last Answer: counts
        ("Answer: 12 Confidence: 0.9", "12"),  # a confidence on the answer's line is not part of it
        ("I think it is twelve\n\n", "I think it is twelve"),  # no Answer: the last non-empty line
        ("Answer:\n1 2\n3 4\n\nThat is the grid.", "1 2\n3 4"),  # a block under Answer:, up to an empty line
        ("Answer:\n```\n1 2\n3 4\n```\nDone", "1 2\n3 4"),
        ("", None),
        ("Confidence: 0.9", None),
    ],
)
def test_the_answer_is_read_from_the_last_answer_line(completion, answer):
    assert extract_answer(strip_confidence(completion)) == answer  # the text the base class hands verify


def test_readings_peel_markup_then_a_trailing_period():
    assert readings("**`42.`**") == ["**`42.`**", "42.", "42"]
    assert readings("Riley is a knight.") == ["Riley is a knight.", "Riley is a knight"]
    assert readings(" 12 ") == ["12"]


def test_a_confidence_number_is_never_read_as_the_answer(verifier):
    ref = reference("chain_sum", "1")
    completions = [
        "I am not sure.\nConfidence: 1",
        "Confidence: 1",
        "Answer: 7 Confidence: 1",
        "Answer: 1\nConfidence: 0",
    ]
    verdicts = verifier.verify_batch(completions, [ref] * 4)
    assert [v.correct for v in verdicts] == [False, False, False, True]
    assert verdicts[0].detail.startswith("answer='I am not sure.'") and verdicts[1].detail == "no answer found"


def test_tolerated_forms_and_wrong_answers(verifier):
    ref = reference("chain_sum", "-12")
    forms = ["Answer: -12", "**Answer:** -12", "Answer: **-12**", "answer: $-12$.", "Answer: `-12`", "12 - 24 =\n-12"]
    # Without an Answer: line the whole last line is the answer, and chain_sum's scorer wants a number.
    wrong = ["Answer: 12", "Answer: -13", "Answer: -12 or -13", "Answer:", "-12\nAnswer: 13", "12 - 24 = -12"]
    verdicts = verifier.verify_batch(forms + wrong, [ref] * (len(forms) + len(wrong)))
    assert [v.correct for v in verdicts] == [True] * len(forms) + [False] * len(wrong)
    assert verdicts[0].detail == "answer='-12' score=1" and verdicts[len(forms)].detail == "answer='12' score=0"


def test_list_and_string_answers_use_the_generators_own_scoring(verifier):
    sorting = reference("number_sorting", "['-3.5', '1.0', '2.25']", {"direction": "ascending"})
    words = reference("word_sorting", "apple, bee, cat", {"sorted_words": ["apple", "bee", "cat"]})
    cases = [
        ("Answer: ['-3.5', '1.0', '2.25']", sorting, True),
        ('Answer: ["-3.5", "1", "2.25"]', sorting, True),  # number_sorting parses the list and compares floats
        ("Answer: ['1.0', '-3.5', '2.25']", sorting, False),
        ("Answer: apple, bee, cat", words, True),
        ("Answer: apple, cat, bee", words, False),
    ]
    verdicts = verifier.verify_batch([c for c, _, _ in cases], [r for _, r, _ in cases])
    assert [v.correct for v in verdicts] == [ok for _, _, ok in cases]


def test_threshold_accepts_partial_credit():
    ref = reference("spell_backward", "talps")
    with build("reasoning_gym", workers=1, threshold=0.5) as lenient:
        verdict = lenient.verify("Answer: talpx", ref)
    assert verdict.correct and verdict.detail == "answer='talpx' score=0.8"
    assert score_here("Answer: talpx", ref) == ("talpx", pytest.approx(0.8))  # wrong at the default threshold 1.0
    with pytest.raises(ValueError, match="threshold must be in"):
        ReasoningGymVerifier(threshold=0.0)


def test_the_generator_config_reaches_the_scorer():
    # decimal_arithmetic rounds the answer to the config's max_num_decimal_places before comparing.
    ref = reference("decimal_arithmetic", "0.333", config={"max_num_decimal_places": 3})
    assert score_here("Answer: 0.3333", ref)[1] == 1.0
    assert score_here("Answer: 0.3333", {**ref, "config": {"max_num_decimal_places": 4}})[1] < 1.0


def test_a_bad_reference_or_a_hung_scorer_costs_one_verdict():
    good = reference("chain_sum", "3")
    countdown = reference("countdown", "1 + 2", {"numbers": [1, 2], "target": 3}, {"min_numbers": 2})
    with build("reasoning_gym", workers=1, timeout=3) as verifier:
        verdicts = verifier.verify_batch(
            ["Answer: 3", "Answer: 3", "Answer: 9**9**9**9", "Answer: 3"], [{"answer": "3"}, good, countdown, good]
        )
    assert verdicts[0].status == "error" and "reasoning_gym reference" in verdicts[0].detail
    assert verdicts[2].failed  # sympy evaluates the power: killed at the deadline (or out of memory), not a hang
    assert verdicts[1].correct and verdicts[3].correct


def test_it_is_registered_and_imports_without_reasoning_gym():
    assert available()["reasoning_gym"] == "built-in"
    script = (
        "import sys; sys.modules['reasoning_gym'] = None\n"
        "from caopd_pl.verifiers import build\n"
        "v = build('reasoning_gym', workers=1)\n"
        "ref = {'dataset': 'chain_sum', 'config': {}, 'entry': {'question': '?', 'answer': '3', 'metadata': {}}}\n"
        "print(v.verify_batch(['Answer: 3', 'no answer'], [ref, ref]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.count("status='error'") == 2 and 'pip install -e ".[real]"' in out
