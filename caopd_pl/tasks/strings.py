"""Generated string and list tasks for the tiny character model: reverse, sort, count, max.

Each kind is a different skill over the same printable-ASCII vocabulary, so a sequence of them makes a continual
learning benchmark with no downloads (:mod:`caopd_pl.continual`). Difficulty grows with the input length, which
spreads a small model's per-prompt success rate between 0 and 1. Answers are judged by the ``answer_text``
verifier (exact match of the ``Answer:`` line).

- ``reverse``: ``Reverse the string: abca`` -> ``Answer: acba``
- ``sort``: ``Sort the letters: dbca`` -> ``Answer: abcd``
- ``count``: ``How many times does b occur in abcab?`` -> ``Answer: 2``
- ``max``: ``Which number is largest: 37 81 12?`` -> ``Answer: 81`` (``length`` two-digit numbers)

Demonstrations are the bare ``Answer:`` line, which keeps completions short for the tiny model's token budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from caopd_pl.tasks.base import GeneratedTask, TaskExample

StringKind = Literal["reverse", "sort", "count", "max"]


def _reverse(rng: random.Random, length: int, alphabet: str) -> tuple[str, str, str]:
    text = "".join(rng.choice(alphabet) for _ in range(length))
    return text, f"Reverse the string: {text}", text[::-1]


def _sort(rng: random.Random, length: int, alphabet: str) -> tuple[str, str, str]:
    text = "".join(rng.choice(alphabet) for _ in range(length))
    return text, f"Sort the letters: {text}", "".join(sorted(text))


def _count(rng: random.Random, length: int, alphabet: str) -> tuple[str, str, str]:
    text = "".join(rng.choice(alphabet) for _ in range(length))
    letter = rng.choice(alphabet)
    return f"{letter}:{text}", f"How many times does {letter} occur in {text}?", str(text.count(letter))


def _max(rng: random.Random, length: int, alphabet: str) -> tuple[str, str, str]:
    numbers = [rng.randint(10, 99) for _ in range(length)]
    return " ".join(map(str, numbers)), f"Which number is largest: {' '.join(map(str, numbers))}?", str(max(numbers))


_GENERATORS: dict[str, Callable[[random.Random, int, str], tuple[str, str, str]]] = {
    "reverse": _reverse,
    "sort": _sort,
    "count": _count,
    "max": _max,
}


class StringTask(GeneratedTask):
    """One generated string/list skill, judged by the ``answer_text`` verifier.

    Args:
        kind: ``reverse``, ``sort``, ``count`` or ``max`` (see the module docstring).
        min_length: shortest input (characters, or numbers for ``max``).
        max_length: longest input; lengths are sampled uniformly in [min_length, max_length].
        alphabet: characters of the strings (ignored by ``max``).
        num_train: training prompts.
        num_val: validation prompts.
        num_test: test prompts.
        seed: generation seed; the splits never share an input.
    """

    def __init__(
        self,
        kind: StringKind = "reverse",
        min_length: int = 2,
        max_length: int = 5,
        alphabet: str = "abcdef",
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 400,
        seed: int = 1234,
    ) -> None:
        super().__init__("answer_text")
        if kind not in _GENERATORS:
            raise ValueError(f"task.kind must be one of {sorted(_GENERATORS)}, got {kind!r}")
        if not 1 <= min_length <= max_length:
            raise ValueError(f"task.min_length, task.max_length need 1 <= min <= max, got {min_length}, {max_length}")
        if not alphabet or "\n" in alphabet:
            raise ValueError(f"task.alphabet must be a non-empty string without newlines, got {alphabet!r}")
        self.kind, self.min_length, self.max_length, self.alphabet = kind, min_length, max_length, alphabet
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.seed = seed

    @property
    def name(self) -> str:
        return f"StringTask[{self.kind}]"

    def generate(self) -> dict[str, list[TaskExample]]:
        # Test first, then val, then train: a small input space fills the evaluation splits before training.
        rng = random.Random(f"{self.seed}:{self.kind}")
        seen: set[str] = set()
        splits: dict[str, list[TaskExample]] = {}
        for split in ("test", "val", "train"):
            splits[split] = self._fresh(rng, seen, self.sizes[split])
        return splits

    def _fresh(self, rng: random.Random, seen: set[str], count: int) -> list[TaskExample]:
        examples: list[TaskExample] = []
        misses = 0
        while len(examples) < count and misses < 50 * max(count, 1):
            length = rng.randint(self.min_length, self.max_length)
            key, question, answer = _GENERATORS[self.kind](rng, length, self.alphabet)
            if key in seen:
                misses += 1
                continue
            seen.add(key)
            examples.append(
                TaskExample(
                    messages=[{"role": "user", "content": question}],
                    reference=answer,
                    demonstration=f"Answer: {answer}",
                    id=f"{self.kind}{length}:{key}",
                    meta={"level": f"{self.kind}{length}"},
                )
            )
        return examples
