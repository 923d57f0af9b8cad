"""Property tests: the confidence parser and the answer extractors never raise, never hang, never return NaN."""

from __future__ import annotations

import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caopd_pl.confidence import parse_confidence, strip_confidence
from caopd_pl.verifiers.chemistry import extract_tagged_answer
from caopd_pl.verifiers.code import extract_code
from caopd_pl.verifiers.math import extract_math_answer
from caopd_pl.verifiers.tooluse import extract_tool_call

# Text that often hits the parsers' special paths, mixed with arbitrary unicode.
FRAGMENTS = st.sampled_from(
    [
        "Confidence:",
        "Confidence: ",
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


@given(st.sampled_from(["Confidence: 9", "\\boxed{", "{", "answer is 1", "<answer>", "Action Input: {", "```", "1,"]))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_one_megabyte_inputs_take_bounded_time(fragment):
    text = fragment * (1_000_000 // len(fragment))
    for extract in (parse_confidence, *EXTRACTORS):
        start = time.perf_counter()
        result = extract(text)
        assert time.perf_counter() - start < 2.0, extract.__name__
        if isinstance(result, float):
            assert not math.isnan(result)
