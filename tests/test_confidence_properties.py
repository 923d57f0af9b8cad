"""Property tests: the confidence parser and the answer extractors never raise, never hang, never return NaN; the
parser, the stripper and the verifiers agree on one definition of the confidence key."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caopd_pl.confidence import find_confidence_key, format_confidence, parse_confidence, strip_confidence
from caopd_pl.verifiers.answer_text import AnswerTextVerifier
from caopd_pl.verifiers.chemistry import ChemistryVerifier, extract_tagged_answer
from caopd_pl.verifiers.code import extract_code
from caopd_pl.verifiers.exact import ExactAnswerVerifier
from caopd_pl.verifiers.math import extract_math_answer
from caopd_pl.verifiers.tooluse import ToolUseVerifier, extract_tool_call

# Text that often hits the parsers' special paths, mixed with arbitrary unicode.
FRAGMENTS = st.sampled_from(
    [
        "Confidence:",
        "Confidence: ",
        "confidence:",
        "CONFIDENCE :",
        "**Confidence:**",
        "Confidence**:",
        "- ",
        "# ",
        "Answer: ",
        "Answer: 7",
        "<answer>A</answer>",
        'Action: f\nAction Input: {"a": 1}',
        "%",
        "nan",
        "inf",
        "-",
        ".",
        "e",
        "9",
        "0",
        "\\boxed{",
        "{",
        "}",
        "answer is",
        "<answer>",
        "</answer>",
        "Action:",
        "Action Input:",
        "```",
        "```python\n",
        "\n",
        " ",
        "1e999",
        "$",
    ]
)
TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=20)), max_size=40).map("".join)
EXTRACTORS = (extract_math_answer, extract_tagged_answer, extract_code, extract_tool_call, strip_confidence)


@given(TEXT)
@settings(max_examples=300, deadline=None)
def test_parse_confidence_is_total_and_bounded(text):
    parsed = parse_confidence(text)
    assert not math.isnan(parsed.value) and 0.0 <= parsed.value <= 1.0
    assert parsed.parsed or parsed.value == 0.0


@given(st.floats(min_value=0, max_value=1, allow_nan=False), TEXT)
@settings(max_examples=200, deadline=None)
def test_a_final_confidence_line_is_read_back(value, prefix):
    parsed = parse_confidence(f"{prefix}\nConfidence: {value:.2f}")
    assert parsed.parsed and abs(parsed.value - round(value, 2)) < 1e-9


@given(TEXT)
@settings(max_examples=300, deadline=None)
def test_extractors_never_raise(text):
    for extract in EXTRACTORS:
        extract(text)


MEGABYTE_FRAGMENTS = ["Confidence: 9", "\\boxed{", "{", "answer is 1", "<answer>", "Action Input: {", "```", "1,"]
MEGABYTE_FRAGMENTS += ["\n- ", "x confidence: ", "**", "\n   1. **"]  # near-misses of the confidence key


@pytest.mark.slow
@given(st.sampled_from(MEGABYTE_FRAGMENTS))
@settings(max_examples=len(MEGABYTE_FRAGMENTS), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_one_megabyte_inputs_take_bounded_time(fragment):
    text = fragment * (1_000_000 // len(fragment))
    for extract in (parse_confidence, *EXTRACTORS):
        start = time.perf_counter()
        result = extract(text)
        assert time.perf_counter() - start < 2.0, extract.__name__
        if isinstance(result, float):
            assert not math.isnan(result)


# Confidence lines as models write them; each holds a number, so it is a key on its own line or after the answer.
LINES = st.builds(
    lambda template, value: template.format(value),
    st.sampled_from(
        ["Confidence: {:.2f}", "confidence: {}.", "**Confidence:** {:.2f}", "Confidence**: {:.0%}", "- Confidence: {}"]
    ),
    st.floats(min_value=0, max_value=1, allow_nan=False),
)
VERIFIERS = (
    (ExactAnswerVerifier(), "7"),
    (AnswerTextVerifier(), "7"),
    (ChemistryVerifier(), "A"),
    (ToolUseVerifier(), [{"Action": "f", "Action_Input": '{"a": 1}'}]),
)


@given(TEXT)
@settings(max_examples=400, deadline=None)
def test_stripped_text_holds_no_confidence_key(text):
    stripped = strip_confidence(text)
    assert find_confidence_key(stripped) is None
    assert not parse_confidence(stripped).parsed  # no value survives either
    assert stripped == stripped.rstrip() and text.startswith(stripped)
    assert strip_confidence(stripped) == stripped


@given(TEXT, st.floats(min_value=0, max_value=1, allow_nan=False))
@settings(max_examples=400, deadline=None)
def test_the_replaced_confidence_is_the_one_read_back(text, value):
    parsed = parse_confidence(strip_confidence(text) + "\n" + format_confidence(value))
    assert parsed.parsed and parsed.value == float(f"{value:.2f}")


@given(TEXT, LINES)
@settings(max_examples=300, deadline=None)
def test_verdicts_do_not_depend_on_the_confidence_line(text, line):
    # Code is the exception: extract_code reads fenced blocks wherever they are, because a program may hold a line
    # that starts with `confidence:` (an annotated variable) which the stripper would cut.
    revised = f"{strip_confidence(text)}\n{line}"
    assert strip_confidence(revised) == strip_confidence(text)
    for verifier, reference in VERIFIERS:
        assert verifier.verify(text, reference) == verifier.verify(revised, reference), type(verifier).__name__
    # The math verifier judges in worker processes; its rule reads what the base class hands it, the stripped text.
    assert extract_math_answer(strip_confidence(text)) == extract_math_answer(strip_confidence(revised))
