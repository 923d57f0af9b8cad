"""reasoning-gym verifier: a completion's final answer, scored by its generator's own ``score_answer``.

Answer rule (:func:`extract_answer`), applied to the completion without its confidence (the base class strips it
before ``verify`` and ``verify_batch``, so a confidence number is never read as the answer):

1. the text after the last ``Answer:`` (any case; ``**Answer:**``, ``**Answer**:`` and ``Final answer:`` too) to the
   end of its line; when nothing follows it on that line, the lines below it up to the first empty line (grids and
   boards: the task writes those answers under a line ``Answer:``), without a surrounding code fence;
2. else the last non-empty line;
3. else no answer (wrong).

The answer is scored as written and, when that falls short of ``threshold``, with surrounding ``**``, ``$`` and
backticks removed, then also a trailing period (:func:`readings`); the best score counts, and the verdict's detail
names the reading and its score. The reference is what :class:`caopd_pl.tasks.reasoning_gym.ReasoningGymTask` writes,
``{"dataset", "config", "entry"}``: ``entry`` holds the generator's ``question``, ``answer`` and ``metadata``, and
``config`` the generator settings that made it, because a few scorers read them (``decimal_arithmetic``'s precision,
``time_intervals``' tolerance, ``puzzle24``'s number range, ``polynomial_equations``' penalties). A scorer is built
once per (dataset, config) in each worker.

Scoring runs in worker processes with a hard per-item deadline and a memory limit, as ``math`` does: several
scorers ``eval`` the answer when it is not an exact match (``string_insertion``, ``spiral_matrix``, ``binary_matrix``,
``n_queens``) or parse it with sympy (``countdown``, ``puzzle24``, ``simple_integration``,
``intermediate_integration``, ``polynomial_multiplication``), so an answer such as ``9**9**9**9`` would otherwise
stall the run. The workers bound time and memory; they are not a sandbox (the ``code`` verifier's bubblewrap is).

``reasoning_gym`` is imported by the workers only: this module imports without it, and a missing package makes every
verdict an ``error`` that says how to install it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import resource
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from caopd_pl.verifiers.base import Verdict
from caopd_pl.verifiers.deadline_pool import DeadlinePool, Status
from caopd_pl.verifiers.pooled import PooledVerifier

MAX_ANSWER_CHARS = 4000
INSTALL_HINT = 'the reasoning-gym package is not installed: pip install -e ".[real]"'
_ANSWER = re.compile(r"(?<![a-z0-9_])answer[ \t]{0,3}(?:\*\*)?[ \t]{0,3}:", re.IGNORECASE)
_CLOSING_BOLD = re.compile(r"^\*\*(?:\s+|$)")
_WRAPPERS = "*$`"


# ---------------------------------------------------------------------------------------------- the answer
def extract_answer(completion: str) -> str | None:
    """The final answer of a completion by the rule in the module docstring; None when there is none. Never raises."""
    if not isinstance(completion, str):
        return None
    last = None
    for last in _ANSWER.finditer(completion):
        pass
    if last is None:
        lines = [line for line in completion.splitlines() if line.strip()]
        return lines[-1].strip()[:MAX_ANSWER_CHARS] if lines else None
    line, _, below = completion[last.end() :].partition("\n")
    line = _CLOSING_BOLD.sub("", line.strip())  # the emphasis that closes "**Answer:** 42"
    answer = line or _block(below)
    return answer[:MAX_ANSWER_CHARS] if answer else None


def _block(text: str) -> str:
    """The lines at the start of ``text`` up to the first empty line (leading empty lines and a code fence skipped)."""
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    fenced = bool(lines) and lines[0].strip().startswith("```")
    block = []
    for line in lines[1:] if fenced else lines:
        if not line or (fenced and line.strip().startswith("```")):
            break
        block.append(line)
    return "\n".join(block).strip()


def readings(answer: str) -> list[str]:
    """The ways ``answer`` is scored, in order: as written; without surrounding ``**``, ``$`` and backticks; and then
    without a trailing period (each distinct and non-empty)."""
    written = answer.strip()
    bare = _unwrap(written)
    return list(dict.fromkeys(text for text in (written, bare, _unwrap(bare.removesuffix("."))) if text))


def _unwrap(text: str) -> str:
    while text != (unwrapped := text.strip(_WRAPPERS).strip()):
        text = unwrapped
    return text


# ---------------------------------------------------------------------------------------------- scoring
@lru_cache(maxsize=64)
def _scorer(dataset: str, config: str) -> Callable[[str, dict[str, Any]], float]:
    """``dataset``'s ``score_answer`` at ``config`` (canonical JSON), built once per process."""
    import reasoning_gym

    return reasoning_gym.create_dataset(dataset, **json.loads(config)).score_answer


def score(item: tuple[str, str, Sequence[str], dict[str, Any]]) -> list[float]:
    """The generator's scores of each reading: ``item`` is (dataset, config JSON, readings, entry). Runs in a worker.

    A score that is not a finite number in [0, 1] counts as 0.
    """
    dataset, config, answers, entry = item
    scorer = _scorer(dataset, config)
    return [_clean(scorer(answer, entry)) for answer in answers]


def _clean(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else 0.0


def parse_reference(reference: Any) -> tuple[str, str, dict[str, Any]]:
    """(dataset, canonical config JSON, entry) of a reference written by the task.

    Raises:
        ValueError: the reference does not have the task's shape (the message says what it has).
    """
    if not isinstance(reference, dict) or not isinstance(reference.get("dataset"), str):
        raise ValueError(f'a reasoning_gym reference is {{"dataset", "config", "entry"}}, got {_shape(reference)}')
    entry, config = reference.get("entry"), reference.get("config") or {}
    if not isinstance(entry, dict) or "answer" not in entry or not isinstance(config, dict):
        raise ValueError(f"a reasoning_gym reference needs an entry with an answer, and a config; {_shape(reference)}")
    return reference["dataset"], json.dumps(config, sort_keys=True), entry


def _shape(value: Any) -> str:
    return f"keys {sorted(value)}" if isinstance(value, dict) else type(value).__name__


def best_reading(answers: Sequence[str], scores: Sequence[float], threshold: float) -> tuple[str, float]:
    """The first reading that reaches ``threshold``, else the highest-scoring one."""
    passing = [i for i, value in enumerate(scores) if value >= threshold]
    index = passing[0] if passing else max(range(len(scores)), key=scores.__getitem__)
    return answers[index], scores[index]


def score_here(completion: str, reference: Any, threshold: float = 1.0) -> tuple[str | None, float]:
    """The answer read from ``completion`` and its best score, in this process, with no deadline.

    For trusted text only (the task checks its own demonstrations with it); a model's completions go through
    :class:`ReasoningGymVerifier`, whose workers bound the time and memory a scorer may take.
    """
    dataset, config, entry = parse_reference(reference)
    answers = readings(extract_answer(completion) or "")
    if not answers:
        return None, 0.0
    return best_reading(answers, score((dataset, config, answers, entry)), threshold)


# ---------------------------------------------------------------------------------------------- worker side
class _Init:
    """Picklable initializer: single-threaded numerical libraries, the memory limit, reasoning_gym imported once."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb

    def __call__(self) -> None:
        # A scorer is single-threaded; OpenBLAS would otherwise reserve buffers per core against the memory limit.
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")
        if self.memory_mb > 0:
            limit = self.memory_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            import reasoning_gym  # noqa: F401 - imported here once, not on the first item
        except ImportError:
            pass  # the parent checks for the package before it starts workers


# ---------------------------------------------------------------------------------------------- verifier
class ReasoningGymVerifier(PooledVerifier):
    """Correct when the generator's ``score_answer`` of the final answer reaches ``threshold``."""

    name = "reasoning_gym"

    def __init__(
        self, threshold: float = 1.0, timeout: float = 10.0, workers: int | None = None, memory_mb: int = 2048
    ) -> None:
        """Describe the verifier; its worker processes start on the first batch and live until :meth:`close`.

        Args:
            threshold: Lowest score judged correct; reasoning-gym gives partial credit (0.01 for a wrong number from
                some generators, a share of matching positions from others), so 1.0 means fully correct only.
            timeout: Hard deadline in seconds for scoring one completion.
            workers: Worker processes; default: the number of CPUs.
            memory_mb: Address-space limit of each worker (0: none).

        Raises:
            ValueError: ``threshold`` outside (0, 1], or a non-positive ``timeout`` or ``workers``.
        """
        super().__init__(timeout, workers)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"reasoning_gym verifier: threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.memory_mb = memory_mb

    def verify(self, completion: str, reference: Any) -> Verdict:
        return self.verify_batch([completion], [reference])[0]

    def _judge(self, completions: Sequence[str], references: Sequence[Any]) -> list[Verdict]:
        verdicts: list[Verdict | None] = []
        jobs: list[tuple[int, tuple[str, str, list[str], dict[str, Any]]]] = []
        for index, (completion, reference) in enumerate(zip(completions, references)):
            verdict, job = _triage(completion, reference)
            verdicts.append(verdict)
            if job is not None:
                jobs.append((index, job))
        if jobs and importlib.util.find_spec("reasoning_gym") is None:
            return [verdict or Verdict.error(f"error: {INSTALL_HINT}") for verdict in verdicts]
        if jobs:
            results = self._workers().map([job for _, job in jobs])
            for (index, job), (status, value) in zip(jobs, results):
                verdicts[index] = self._verdict(job[2], status, value)
        return verdicts  # type: ignore[return-value]

    def _verdict(self, answers: list[str], status: Status, value: Any) -> Verdict:
        if status == "timeout":
            return Verdict.timeout(f"{value} (answer={answers[0][:100]!r})")
        if status == "error":
            return Verdict.error(f"error: {value}")
        answer, best = best_reading(answers, value, self.threshold)
        return Verdict(best >= self.threshold, f"answer={answer[:200]!r} score={best:.3g}")

    def _start_pool(self) -> DeadlinePool:
        return DeadlinePool(score, self.workers, self.timeout, initializer=_Init(self.memory_mb))


def _triage(completion: Any, reference: Any) -> tuple[Verdict | None, tuple[str, str, list[str], dict] | None]:
    """Decide the cases that need no scorer here; return the worker's job otherwise."""
    try:
        dataset, config, entry = parse_reference(reference)
    except ValueError as err:
        return Verdict.error(f"error: {err}"), None
    answers = readings(extract_answer(completion) or "")
    if not answers:
        return Verdict(False, "no answer found"), None
    return None, (dataset, config, answers, entry)
