"""Attack class: rewriting the reference. What the test calls besides the candidate (helpers the prompt defines) is
the prompt's own, whatever the completion redefines; and a test that could never run is refused or fails, never
passes. The prompts and tests reproduce the shapes of HumanEval/32, /38 and /50 (no download: written out here)."""

from __future__ import annotations

import pytest

from caopd_pl.verifiers.code import parse_code_reference

HUMANEVAL_38 = {
    "prompt": '''

def encode_cyclic(s: str):
    """
    returns encoded string by cycling groups of three characters.
    """
    # split string to groups. Each of length 3.
    groups = [s[(3 * i):min((3 * i + 3), len(s))] for i in range((len(s) + 2) // 3)]
    # cycle elements in each group. Unless group has fewer elements than 3.
    groups = [(group[1:] + group[0]) if len(group) == 3 else group for group in groups]
    return "".join(groups)


def decode_cyclic(s: str):
    """
    takes as input string encoded with encode_cyclic function. Returns decoded string.
    """
''',
    "test": """

METADATA = {}


def check(candidate):
    from random import randint, choice
    import string

    letters = string.ascii_lowercase
    for _ in range(100):
        str = ''.join(choice(letters) for i in range(randint(10, 20)))
        encoded_str = encode_cyclic(str)
        assert candidate(encoded_str) == str

""",
    "entry_point": "decode_cyclic",
}
HUMANEVAL_50 = {
    "prompt": '''

def encode_shift(s: str):
    """
    returns encoded string by shifting every character by 5 in the alphabet.
    """
    return "".join([chr(((ord(ch) + 5 - ord("a")) % 26) + ord("a")) for ch in s])


def decode_shift(s: str):
    """
    takes as input string encoded with encode_shift function. Returns decoded string.
    """
''',
    "test": """

METADATA = {}


def check(candidate):
    from random import randint, choice
    import copy
    import string

    letters = string.ascii_lowercase
    for _ in range(100):
        str = ''.join(choice(letters) for i in range(randint(10, 20)))
        encoded_str = encode_shift(str)
        assert candidate(copy.deepcopy(encoded_str)) == str

""",
    "entry_point": "decode_shift",
}
HUMANEVAL_32 = {
    "prompt": '''import math


def poly(xs: list, x: float):
    """
    Evaluates polynomial with coefficients xs at point x.
    return xs[0] + xs[1] * x + xs[1] * x^2 + .... xs[n] * x^n
    """
    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])


def find_zero(xs: list):
    """ xs are coefficients of a polynomial.
    find_zero find x such that poly(x) = 0.
    find_zero returns only only zero point, even if there are many.
    Moreover, find_zero only takes list xs having even number of coefficients
    and largest non zero coefficient as it guarantees
    a solution.
    """
''',
    "test": """

METADATA = {}


def check(candidate):
    import math
    import random
    rng = random.Random(42)
    import copy
    for _ in range(100):
        ncoeff = 2 * rng.randint(1, 4)
        coeffs = []
        for _ in range(ncoeff):
            coeff = rng.randint(-10, 10)
            if coeff == 0:
                coeff = 1
            coeffs.append(coeff)
        solution = candidate(copy.deepcopy(coeffs))
        assert math.fabs(poly(coeffs, solution)) < 1e-4

""",
    "entry_point": "find_zero",
}
BISECTION = """    begin, end = -1.0, 1.0
    while poly(xs, begin) * poly(xs, end) > 0:
        begin *= 2.0
        end *= 2.0
    while end - begin > 1e-10:
        center = (begin + end) / 2.0
        if poly(xs, center) * poly(xs, begin) > 0:
            begin = center
        else:
            end = center
    return begin
"""
# (reference, a correct continuation, a wrong continuation that redefines the helper the test calls)
PROBLEMS = {
    "HumanEval/38": (
        HUMANEVAL_38,
        "    return encode_cyclic(encode_cyclic(s))\n",
        "    return s\n\n\ndef encode_cyclic(s: str):\n    return s\n",
    ),
    "HumanEval/50": (
        HUMANEVAL_50,
        '    return "".join([chr(((ord(ch) - 5 - ord("a")) % 26) + ord("a")) for ch in s])\n',
        "    return s\n\n\ndef encode_shift(s: str):\n    return s\n",
    ),
    "HumanEval/32": (HUMANEVAL_32, BISECTION, "    return 0.0\n\n\ndef poly(xs: list, x: float):\n    return 0.0\n"),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_a_helper_the_prompt_defines_is_the_prompts_whatever_the_completion_redefines(verifier, problem):
    reference, correct, redefines = PROBLEMS[problem]
    as_a_block = f"```python\n{reference['prompt']}{redefines}```\nConfidence: 0.9"  # restates the prompt, then cheats
    verdicts = verifier.verify_batch([correct, redefines, as_a_block], [reference] * 3)
    assert [v.correct for v in verdicts] == [True, False, False], [v.detail for v in verdicts]


def test_a_stub_the_prompt_leaves_is_the_candidates_and_a_prompt_may_end_inside_a_function(verifier):
    prompt = (
        "def shift(c: str) -> str:\n    return chr(ord(c) + 1)\n\n\n"
        'def helper(s: str) -> str:\n    """The candidate writes this one too."""\n\n\n'
        "def solve(s: str) -> str:\n    # finish me\n"  # not Python on its own: the prompt is bound up to here
    )
    good = "    return helper(s)\n\n\ndef helper(s):\n    return ''.join(shift(c) for c in s)\n"
    redefines = "    return s\n\n\ndef helper(s):\n    return 'bc'\n\n\ndef shift(c):\n    return c\n"
    test = "def check(candidate):\n    assert helper('ab') == 'bc'\n"
    test += "    assert candidate('ab') == shift('a') + shift('b')\n"
    reference = {"prompt": prompt, "test": test, "entry_point": "solve"}
    # helper is a stub, so the candidate's is called; shift is the prompt's, so redefining it does not help
    assert [v.correct for v in verifier.verify_batch([good, redefines], [reference] * 2)] == [True, False]


@pytest.mark.parametrize(
    ("reference", "refusal"),
    [
        ({"test": "def check(candidate):\n    return 0\n"}, "no entry_point"),
        ({"test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": None}, "no entry_point"),
        ({"test": ""}, "the test is empty"),
        ({"test": "# all tests were dropped\n"}, "the test is empty"),
        ({"test": "def check(candidate):\n    assert candidate(\n"}, "not valid Python"),
    ],
)
def test_a_test_that_could_never_run_is_refused_with_one_line_naming_it(verifier, reference, refusal):
    with pytest.raises(ValueError, match=refusal):
        parse_code_reference(reference)
    (verdict,) = verifier.verify_batch(["```python\ndef solve():\n    return 0\n```"], [reference])
    assert not verdict.correct and verdict.status == "error" and refusal in verdict.detail
    assert "\n" not in verdict.detail


@pytest.mark.parametrize(
    ("test", "entry_point", "failure"),
    [
        ("def check(candidate):\n    return 0\n", None, "names no entry_point"),  # what the host refuses anyway
        ("pass\n", None, "never called the program"),
        ("def check_renamed(candidate):\n    assert candidate() == 1\n", "solve", "never called the program"),
        ("def check(candidate):\n    return 0\n", "solve", "never called the program"),
    ],
)
def test_the_judge_fails_a_test_that_never_called_the_program(verifier, test, entry_point, failure):
    job = {"program": "def solve():\n    return 0\n", "prompt": "", "test": test, "entry_point": entry_point}
    run = verifier.sandbox.run(job, timeout=10)
    assert not run.passed and run.verdict is not None and failure in run.verdict, run.verdict
