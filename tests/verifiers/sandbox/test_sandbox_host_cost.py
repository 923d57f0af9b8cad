"""Attack class: host-side cost. What the host does with a completion outside the sandbox (parsing it, reading the
output) is bounded, so no completion costs the host more than its share of the deadline."""

from __future__ import annotations

import time

import pytest

TWENTY_MB = 20 << 20
FENCE_SHAPES = ["```python\n", "```", "```" + "a" * 20, "```        " + "b" * 90, "````\n", "```py x\n```"]


@pytest.mark.parametrize("shape", FENCE_SHAPES)
def test_twenty_megabytes_of_unclosed_fences_cost_the_host_nothing(verifier, shape):
    completion = shape * (TWENTY_MB // len(shape)) + "\nConfidence: 0.9"
    start = time.monotonic()
    verdict = verifier.verify(completion, {"test": "def check(candidate):\n    assert candidate() == 42\n"})
    assert time.monotonic() - start < 0.5
    assert not verdict.correct and "max_chars" in verdict.detail


def test_a_long_but_allowed_completion_is_still_judged(judge, verifier):
    padding = "#" + "x" * 200 + "\n"
    program = padding * ((verifier.max_chars // 2) // len(padding)) + "def solve():\n    return 42\n"
    assert judge(program).correct
