"""Math verifier: the completion's final answer, compared with the reference by math-verify.

Answer rule (:func:`extract_math_answer`), applied to the completion without its ``Confidence:`` line (the base
class strips it before ``verify`` and ``verify_batch``):

1. the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces;
2. else the text after the last "answer is" (case-insensitive; "The final answer is: $3$") up to the end of its line,
   without surrounding ``$``, ``**`` and a trailing period;
3. else the last number (``-12``, ``3.5``, ``1,000``, ``3/4``);
4. else no answer (wrong).

Both sides are parsed by math-verify as ``\\boxed{answer}`` and compared with ``math_verify.verify``; a string-equal
answer is accepted without parsing. math-verify's own timeouts rely on ``signal.alarm``, which fails outside a main
thread and cannot interrupt C code (``9^{9^{9^9}}``), so parsing runs in a :class:`DeadlinePool`: each item has a
hard deadline, after which its worker is killed and the verdict's status is ``timeout`` (counted by ``timeouts``).
"""

from __future__ import annotations

import logging
import re
import resource
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from caopd_pl.verifiers.base import Verdict
from caopd_pl.verifiers.deadline_pool import DeadlinePool, Status
from caopd_pl.verifiers.pooled import PooledVerifier

MAX_ANSWER_CHARS = 1000
_BOX = re.compile(r"\\(?:boxed|fbox)\s{0,4}\{")
_ANSWER_IS = re.compile(r"answer\s{0,4}is\s{0,4}:?", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d{1,50}(?:,\d{3}){0,20}(?:\.\d{1,50})?(?:/\d{1,50})?")
_MAX_BOXES = 64


def _balanced(text: str, start: int) -> str | None:
    """The text from ``start`` up to the brace that closes the one just before it, or None when unbalanced."""
    depth = 1
    for position in range(start, min(len(text), start + 20 * MAX_ANSWER_CHARS)):
        char = text[position]
        depth += (char == "{") - (char == "}")
        if depth == 0:
            return text[start:position]
    return None


def _last_boxed(body: str) -> str | None:
    starts = [match.end() for match in _BOX.finditer(body)][-_MAX_BOXES:]
    for start in reversed(starts):
        content = _balanced(body, start)
        if content is not None:
            return content.strip()
    return None


def _after_answer_is(body: str) -> str | None:
    last = None
    for last in _ANSWER_IS.finditer(body):
        pass
    if last is None:
        return None
    line = body[last.end() : last.end() + MAX_ANSWER_CHARS].split("\n", 1)[0]
    answer = line.strip().strip("*").strip().rstrip(".").strip().strip("$").strip()
    return answer or None


def extract_math_answer(completion: str) -> str | None:
    """The final answer of a completion by the rule in the module docstring; None when there is none. Never raises."""
    if not isinstance(completion, str):
        return None
    for rule in (_last_boxed, _after_answer_is):
        answer = rule(completion)
        if answer:
            return answer[:MAX_ANSWER_CHARS]
    numbers = _NUMBER.findall(completion[-100_000:])
    return numbers[-1].replace(",", "") if numbers else None


def _normalise(answer: str) -> str:
    return re.sub(r"\s+", "", answer).strip("$.")


# ---------------------------------------------------------------------------------------------- worker side
def _init_worker(memory_mb: int) -> None:
    """Limit the worker's memory and silence math-verify's warnings about its disabled alarm timeouts."""
    if memory_mb > 0:
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401 - imported once here, not on the first item


@lru_cache(maxsize=4096)
def _parse(answer: str) -> Any:
    from math_verify import parse

    return parse(f"\\boxed{{{answer}}}", parsing_timeout=None)


def compare(pair: tuple[str, str]) -> bool:
    """Whether math-verify finds ``answer`` equal to ``reference`` (runs in a pool worker)."""
    from math_verify import verify

    answer, reference = pair
    gold, target = _parse(reference), _parse(answer)
    return bool(gold) and bool(target) and verify(gold, target, timeout_seconds=None)


class _Init:
    """Picklable initializer carrying the memory limit."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb

    def __call__(self) -> None:
        _init_worker(self.memory_mb)


# ---------------------------------------------------------------------------------------------- verifier
class MathVerifier(PooledVerifier):
    """Correct when the final answer equals the reference under math-verify."""

    name = "math"

    def __init__(self, timeout: float = 5.0, workers: int | None = None, memory_mb: int = 2048) -> None:
        """Describe the verifier; its worker processes start on the first batch and live until :meth:`close`.

        Args:
            timeout: Hard deadline in seconds for one item's parse-and-compare.
            workers: Worker processes; default: the number of CPUs.
            memory_mb: Address-space limit of each worker (0: none), so a huge expression fails fast.

        Raises:
            ValueError: a non-positive ``timeout`` or ``workers``.
        """
        super().__init__(timeout, workers)
        self.memory_mb = memory_mb

    @property
    def timeouts(self) -> int:
        """Items that hit the deadline so far."""
        return self._pool.timeouts if self._pool is not None else 0

    def verify(self, completion: str, reference: Any) -> Verdict:
        return self.verify_batch([completion], [reference])[0]

    def _judge(self, completions: Sequence[str], references: Sequence[Any]) -> list[Verdict]:
        verdicts: list[Verdict | None] = []
        jobs: list[tuple[int, tuple[str, str]]] = []
        for index, (completion, reference) in enumerate(zip(completions, references)):
            verdict, pair = _triage(completion, reference)
            verdicts.append(verdict)
            if pair is not None:
                jobs.append((index, pair))
        if jobs:
            for (index, pair), (status, value) in zip(jobs, self._workers().map([pair for _, pair in jobs])):
                verdicts[index] = _verdict(pair[0], status, value)
        return verdicts  # type: ignore[return-value]

    def _start_pool(self) -> DeadlinePool:
        return DeadlinePool(compare, self.workers, self.timeout, initializer=_Init(self.memory_mb))


def _triage(completion: Any, reference: Any) -> tuple[Verdict | None, tuple[str, str] | None]:
    """Decide the cheap cases here; return the (answer, reference) pair that needs math-verify otherwise."""
    if isinstance(reference, dict):
        reference = reference.get("answer")
    if reference is None or isinstance(reference, bool) or not isinstance(reference, (str, int, float)):
        return Verdict.error(f"error: a math reference is a string or number, got {type(reference).__name__}"), None
    answer = extract_math_answer(completion)
    if answer is None:
        return Verdict(False, "no answer found"), None
    reference = str(reference).strip()
    if _normalise(answer) == _normalise(reference):
        return Verdict(True, f"answer={answer}"), None
    return None, (answer, reference)


def _verdict(answer: str, status: Status, value: Any) -> Verdict:
    if status == "ok":
        return Verdict(bool(value), f"answer={answer[:200]}")
    if status == "timeout":
        return Verdict.timeout(f"{value} (answer={answer[:100]})")
    return Verdict.error(f"error: {value}")
