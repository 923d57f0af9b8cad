"""Code verifier: code extraction, the HumanEval-compatible reference format, and true/false verdicts."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from caopd_pl.verifiers import build
from caopd_pl.verifiers.code import CodeVerifier, _verdict, extract_code, parse_code_reference
from caopd_pl.verifiers.sandbox import SandboxRun

# CI sets CAOPD_REQUIRE_BWRAP=1 so that a missing bubblewrap fails these tests instead of skipping them.
NO_BWRAP = shutil.which("bwrap") is None and not os.environ.get("CAOPD_REQUIRE_BWRAP")

needs_bwrap = pytest.mark.skipif(NO_BWRAP, reason="bubblewrap is not installed")

HUMANEVAL = {
    "prompt": 'def add(a: int, b: int) -> int:\n    """Sum of a and b."""\n',
    "test": "METADATA = {}\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
    "    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


def test_extract_code_prefers_the_last_python_block():
    text = "```text\nnot code\n```\n```python\nx = 1\n```\nthen\n```py\nx = 2\n```\nConfidence: 0.5"
    assert extract_code(text) == "x = 2\n"
    assert extract_code("```\ny = 3\n```") == "y = 3\n"
    assert extract_code("    return a + b\nConfidence: 0.9") == "    return a + b"


def test_reference_formats():
    assert parse_code_reference(json.dumps(HUMANEVAL)) == HUMANEVAL
    assert parse_code_reference({"test": "assert f() == 1"}) == {
        "prompt": "",
        "test": "assert f() == 1",
        "entry_point": None,
    }
    with pytest.raises(ValueError, match="test"):
        parse_code_reference({"prompt": "x"})


@pytest.fixture(scope="module")
def verifier():
    if NO_BWRAP:
        pytest.skip("bubblewrap is not installed")
    verifier = build("code", timeout=5.0, workers=2)
    yield verifier
    verifier.close()


@needs_bwrap
def test_humaneval_continuation_and_full_function(verifier):
    completions = [
        "    return a + b\n\nConfidence: 0.9",  # continues the prompt
        "```python\ndef add(a, b):\n    return b + a\n```\nConfidence: 0.8",  # restates the function
        "    return a - b\nConfidence: 0.9",
        "    return a +\nConfidence: 0.9",  # syntax error
    ]
    verdicts = verifier.verify_batch(completions, [HUMANEVAL] * 4)
    assert [v.correct for v in verdicts] == [True, True, False, False]
    assert "SyntaxError" in verdicts[3].detail


@needs_bwrap
def test_plain_asserts_without_entry_point(verifier):
    reference = {
        "test": "assert square(3) == 9\nassert cube(2) == 8\nassert [square(i) for i in range(3)] == [0, 1, 4]"
    }
    good = "```python\ndef square(x):\n    return x * x\n\ndef cube(x):\n    return x ** 3\n```"
    bad = "```python\ndef square(x):\n    return x * x\n```"
    assert [v.correct for v in verifier.verify_batch([good, bad], [reference, reference])] == [True, False]


@needs_bwrap
def test_plain_data_crosses_the_boundary(verifier):
    program = (
        "```python\ndef stats(xs, *, scale=1):\n"
        "    return {'sum': sum(xs) * scale, 'set': set(xs), 'pair': (min(xs), max(xs)),\n"
        "            'f': 0.5, 'b': b'x', 'n': None}\n"
        "```"
    )
    test = (
        "def check(candidate):\n    out = candidate([1, 2, 2], scale=2)\n"
        "    assert out == {'sum': 10, 'set': {1, 2}, 'pair': (1, 2), 'f': 0.5, 'b': b'x', 'n': None}\n"
        "    assert isinstance(out['pair'], tuple)\n"
    )
    assert verifier.verify(program, {"test": test, "entry_point": "stats"}).correct


@needs_bwrap
def test_expected_exceptions_propagate_as_builtin_types(verifier):
    test = "def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        return\n"
    test += "    raise AssertionError('no error')\n"
    raises = "```python\ndef root(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x ** 0.5\n```"
    silent = "```python\ndef root(x):\n    return 0\n```"
    reference = {"test": test, "entry_point": "root"}
    assert [v.correct for v in verifier.verify_batch([raises, silent], [reference, reference])] == [True, False]


@needs_bwrap
def test_ints_of_any_size_cross_the_boundary(verifier):
    # JSON writes ints in decimal, which Python caps at 4,300 digits: a correct answer must not fail for its size.
    program = "```python\ndef power(base, exp):\n    return base ** exp\n```"
    test = "def check(candidate):\n    assert candidate(10, 5000) == 10 ** 5000\n"
    test += "    assert candidate(-7, 9001) == -(7 ** 9001)\n"
    test += "    assert candidate(2, 62) == 2 ** 62\n    assert candidate(2, 64) == 2 ** 64\n"
    assert verifier.verify(program, {"test": test, "entry_point": "power"}).correct
    test_with_big_argument = "def check(candidate):\n    assert candidate(10 ** 5000, 2) == 10 ** 10000\n"
    assert verifier.verify(program, {"test": test_with_big_argument, "entry_point": "power"}).correct


@needs_bwrap
def test_program_globals_the_test_names_cross_unless_they_cannot(verifier):
    program = "```python\nimport math\nLIMIT = 10\ndef root(x):\n    return math.isqrt(min(x, LIMIT ** 2))\n```"
    test = "import math\ndef check(candidate):\n    assert LIMIT == 10 and candidate(50) == math.isqrt(50) == 7\n"
    assert verifier.verify(program, {"test": test, "entry_point": "root"}).correct  # `math` stays the test's own


@needs_bwrap
def test_missing_entry_point_and_bad_reference(verifier):
    verdicts = verifier.verify_batch(
        ["def other():\n    return 1\n", "x = 1"], [HUMANEVAL | {"prompt": ""}, {"no": "test"}]
    )
    assert not verdicts[0].correct and "entry point" in verdicts[0].detail
    assert not verdicts[1].correct and verdicts[1].status == "error"


@pytest.mark.parametrize(
    ("run", "status", "detail"),
    [
        (SandboxRun("PASS", ""), "correct", "passed"),
        (SandboxRun("FAIL AssertionError: 3 != 4", ""), "wrong", "failed: AssertionError: 3 != 4"),
        (SandboxRun(None, "", output_exceeded=True), "wrong", "failed: output limit exceeded"),
        (SandboxRun(None, "Killed", returncode=137), "wrong", "failed: the test harness was killed (exit 137): Killed"),
        (SandboxRun(None, "", timed_out=True), "timeout", "failed: time limit (10 s) exceeded"),
        (SandboxRun(None, "bwrap: no namespaces", started=False), "error", "error: the sandbox could not start: bwrap"),
        # a candidate that prints what bwrap would print is still the candidate's own failure
        (SandboxRun(None, "bwrap: no namespaces", returncode=1), "wrong", "failed: the test harness was killed"),
    ],
)
def test_each_sandbox_outcome_has_its_status(run, status, detail):
    verdict = _verdict(run, timeout=10.0)
    assert verdict.status == status and verdict.detail.startswith(detail)


@pytest.mark.slow
@needs_bwrap
def test_a_program_that_runs_out_of_time_is_a_timeout_not_a_wrong_answer():
    with CodeVerifier(timeout=2.0, workers=1) as verifier:
        verdict = verifier.verify("def add(a, b):\n    while True:\n        pass\n", HUMANEVAL | {"prompt": ""})
    assert not verdict.correct and verdict.status == "timeout" and "time limit (2 s)" in verdict.detail


def test_constructor_validates():
    with pytest.raises(ValueError, match="code verifier: timeout must be > 0 seconds, got 0"):
        CodeVerifier(timeout=0)
    with pytest.raises(ValueError, match="code verifier: workers must be >= 1, got 0"):
        CodeVerifier(workers=0)
    with pytest.raises(ValueError, match="sandbox mode"):
        CodeVerifier(sandbox="docker")
    with pytest.raises(ValueError, match="max_chars"):
        CodeVerifier(max_chars=0)
