"""The embedded default task: integer arithmetic generated in code, with a spread of difficulty.

A *level* is written ``<digits><op><digits>``: ``2+1`` adds a two-digit and a one-digit number, ``2*1``
multiplies them, ``2-2`` subtracts (the first operand is never smaller). Mixing easy and hard levels spreads the
per-prompt success rate of a small model between 0 and 1, which is what calibration is about. Out-of-distribution
prompts come from levels that are never trained (longer operands, or an operation not seen).

Prompt: ``What is 37+48?``. Demonstration (``demonstration="worked"``, the default): the column method, one line per
digit from the right, then the answer line that the ``exact`` verifier reads::

    7+8=15
    3+4+1=8
    Answer: 85

Each digit of the answer is then a function of a few tokens the model has just written, so a small model learns
the algorithm in a few hundred steps, the same on every seed, rather than memorising sums until it suddenly
generalises (the short form's warm start landed anywhere from 10% to 70% right depending on the seed and the
CPU's summation order). Subtraction, and multiplication by a number of more than one digit, keep the short form.
``demonstration="short"``: ``37+48=85\\nAnswer: 85`` (a restatement, then the answer line).
"""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Iterator, Sequence
from typing import Literal

from caopd_pl.tasks.base import GeneratedTask, TaskExample

_LEVEL = re.compile(r"^([1-9])([+\-*])([1-9])$")
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def parse_level(level: str) -> tuple[int, str, int]:
    """``"2+1"`` -> (2, "+", 1). Raises ValueError naming the expected form."""
    match = _LEVEL.match(level)
    if not match:
        raise ValueError(f"arithmetic level {level!r} must look like '2+1' (<digits><op><digits>, op one of + - *)")
    return int(match[1]), match[2], int(match[3])


def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def make_problem(rng: random.Random, level: str) -> tuple[int, str, int]:
    """One (a, op, b) of ``level``; subtraction keeps a >= b."""
    digits_a, op, digits_b = parse_level(level)
    a, b = _operand(rng, digits_a), _operand(rng, digits_b)
    if op == "-" and a < b:
        a, b = b, a
    return a, op, b


Demonstration = Literal["worked", "short"]


def make_example(a: int, op: str, b: int, level: str, demonstration: Demonstration = "worked") -> TaskExample:
    result = _OPS[op](a, b)
    expression = f"{a}{op}{b}"
    steps = column_steps(a, op, b) if demonstration == "worked" else None
    body = "\n".join(steps) if steps else f"{expression}={result}"
    return TaskExample(
        messages=[{"role": "user", "content": f"What is {expression}?"}],
        reference=result,
        demonstration=f"{body}\nAnswer: {result}",
        id=f"{level}:{expression}",
        meta={"level": level},
    )


def column_steps(a: int, op: str, b: int) -> list[str] | None:
    """The column method's lines, units digit first (``7+8=15``, ``3+4+1=8``); None where it has no such form.

    Addition adds a digit of each operand (0 past the shorter one's end) and the carry; multiplication by a one-digit
    number multiplies a digit of ``a`` and adds the carry. A line shows the carry only when it is not 0.
    """
    if op == "-" or (op == "*" and b > 9):
        return None
    digits_a = [int(d) for d in reversed(str(a))]
    digits_b = [int(d) for d in reversed(str(b))] if op == "+" else []
    width = max(len(digits_a), len(digits_b))
    digits_a += [0] * (width - len(digits_a))
    digits_b += [0] * (width - len(digits_b))
    steps, carry = [], 0
    for x, y in zip(digits_a, digits_b if op == "+" else [b] * width):
        value = x + y + carry if op == "+" else x * y + carry
        steps.append(f"{x}{op}{y}" + (f"+{carry}" if carry else "") + f"={value}")
        carry = value // 10
    return steps


class ArithmeticTask(GeneratedTask):
    """Generated arithmetic prompts, judged by the ``exact`` verifier.

    Args:
        levels: levels of the ``train``, ``val`` and ``test`` splits, sampled uniformly.
        ood_levels: levels of the ``ood`` split (never trained).
        num_train: training prompts.
        num_val: validation prompts.
        num_test: test prompts (also the size of ``ood``).
        seed: generation seed; the splits never share a problem.
        demonstration: ``worked`` (the column method, see the module docstring) or ``short`` (the sum restated).
    """

    def __init__(
        self,
        levels: Sequence[str] = ("1+1", "2+1", "2+2", "2*1"),
        ood_levels: Sequence[str] = ("3+2", "3*1"),
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 400,
        seed: int = 1234,
        demonstration: Demonstration = "worked",
    ) -> None:
        super().__init__("exact")
        if demonstration not in ("worked", "short"):
            raise ValueError(f"task.demonstration must be 'worked' or 'short', got {demonstration!r}")
        for level in [*levels, *ood_levels]:
            parse_level(level)
        if not levels:
            raise ValueError("task.levels must name at least one level, e.g. ['1+1', '2+2']")
        self.levels, self.ood_levels = list(levels), list(ood_levels)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test, "ood": num_test if ood_levels else 0}
        self.seed, self.demonstration = seed, demonstration

    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test", "ood") if self.ood_levels else ("train", "val", "test")

    def generate(self) -> dict[str, list[TaskExample]]:
        rng = random.Random(self.seed)
        splits: dict[str, list[TaskExample]] = {name: [] for name in self.splits()}
        for levels, names in ((self.levels, ("test", "val", "train")), (self.ood_levels, ("ood",))):
            for level in levels:
                stream = unique_problems(rng, level)
                quotas = _quotas([self.sizes[n] / len(levels) for n in names], level_size(level))
                for name, quota in zip(names, quotas):
                    splits[name] += [make_example(*next(stream), level, self.demonstration) for _ in range(quota)]
        for examples in splits.values():
            rng.shuffle(examples)
        return splits


def level_size(level: str) -> int:
    """How many distinct problems ``level`` has (subtraction swaps operands, so a-b and b-a are one problem)."""
    digits_a, op, digits_b = parse_level(level)
    if op == "-" and digits_a == digits_b:
        return _count(digits_a) * (_count(digits_a) + 1) // 2
    return _count(digits_a) * _count(digits_b)


def _count(digits: int) -> int:
    return 10 if digits == 1 else 9 * 10 ** (digits - 1)


def _quotas(demands: list[float], pool: int) -> list[int]:
    """Per-split counts of one level of ``pool`` problems: ``demands`` are (test, val, train) or (ood,).

    Held-out splits come first, so every level keeps its share of them however large the training split is. A small
    level (1+1 has 100 problems) cannot fill every split: its held-out demands shrink to half of its problems and
    training takes what is left, so the splits stay disjoint and none is empty.
    """
    if len(demands) == 1:
        return [int(min(demands[0], pool))]
    *held_out, train = demands
    scale = min(1.0, pool / 2 / max(sum(held_out), 1e-9))
    quotas = [int(d * scale) for d in held_out]
    return [*quotas, int(min(train, pool - sum(quotas)))]


def unique_problems(rng: random.Random, level: str) -> Iterator[tuple[int, str, int]]:
    """Distinct problems of ``level`` in random order (enumerated when the level is small)."""
    digits_a, op, digits_b = parse_level(level)
    if level_size(level) <= 200_000:
        lows = [0 if d == 1 else 10 ** (d - 1) for d in (digits_a, digits_b)]
        pairs = [(a, b) for a in range(lows[0], 10**digits_a) for b in range(lows[1], 10**digits_b)]
        rng.shuffle(pairs)
        seen: set[tuple[int, int]] = set()
        for a, b in pairs:
            a, b = (b, a) if op == "-" and a < b else (a, b)
            if (a, b) not in seen:
                seen.add((a, b))
                yield a, op, b
        return
    seen = set()
    while True:
        a, _, b = make_problem(rng, level)
        if (a, b) not in seen:
            seen.add((a, b))
            yield a, op, b
