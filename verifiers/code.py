"""Code verifier: runs the completion's Python against the reference tests in the bubblewrap sandbox.

Reference format (HumanEval-compatible), a dict or its JSON string::

    {"prompt": "def add(a, b):\\n", "test": "def check(candidate):\\n    assert candidate(1, 2) == 3\\n",
     "entry_point": "add"}

- ``prompt`` (optional) is prepended to the extracted code (HumanEval completions continue the prompt); what else it
  defines (helpers such as HumanEval's ``encode_cyclic`` or ``poly``) the test uses in the prompt's own version,
  whatever the completion redefines;
- ``test`` defines ``check(candidate)`` (called with ``entry_point``, which it then requires) or is plain top-level
  asserts that name the program's functions directly (MBPP style); a test that never calls the program fails;
- ``entry_point`` (optional) names the function under test.

The code is the last fenced block tagged ``python``/``py``, else the last fenced block, else the whole completion
without its confidence line. A completion longer than ``max_chars`` fails without being parsed: the host's work on a
completion is bounded before the sandbox's deadline starts. The program and the test run in separate processes inside
the sandbox (see :mod:`caopd_pl.verifiers.code_harness`): functions are called across the boundary with plain-data
arguments and results, so programs whose functions take callbacks or return custom objects fail by design.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from caopd_pl.confidence import strip_confidence
from caopd_pl.verifiers.base import Verdict, safe_verify
from caopd_pl.verifiers.pooled import PooledVerifier
from caopd_pl.verifiers.sandbox import Sandbox, SandboxLimits, SandboxRun

_FENCE = re.compile(r"```[ \t]{0,8}([A-Za-z0-9_+-]{0,20})[^\n]{0,80}\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
    """The program in a completion: the last ```python block, else the last fenced block, else the whole text."""
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(completion)]
    python_blocks = [body for tag, body in blocks if tag in ("python", "py", "python3")]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return strip_confidence(completion)


def parse_code_reference(reference: Any) -> dict[str, Any]:
    """Validate a code reference (dict or JSON string) into ``{"prompt", "test", "entry_point"}``.

    Raises:
        ValueError: the reference has no ``test`` string, has fields of the wrong type, or has a test that could never
            run: empty, not Python, or a ``check(candidate)`` with no ``entry_point`` to call it with.
    """
    if isinstance(reference, str):
        reference = json.loads(reference)
    if not isinstance(reference, dict) or not isinstance(reference.get("test"), str):
        raise ValueError('a code reference is {"test": str, "prompt": str (optional), "entry_point": str (optional)}')
    prompt, entry_point = reference.get("prompt") or "", reference.get("entry_point") or None
    if not isinstance(prompt, str) or not (entry_point is None or isinstance(entry_point, str)):
        raise ValueError("code reference: 'prompt' and 'entry_point' must be strings")
    _check_test_runs(reference["test"], entry_point)
    return {"prompt": prompt, "test": reference["test"], "entry_point": entry_point}


def _check_test_runs(test: str, entry_point: str | None) -> None:
    # A missing or renamed data column must be refused, never read as a test that passes every program.
    try:
        tree = ast.parse(test)
    except SyntaxError as err:
        raise ValueError(f"code reference: the test is not valid Python ({err.msg}, line {err.lineno})") from None
    if not tree.body:
        raise ValueError("code reference: the test is empty")
    if entry_point is None and any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in tree.body):
        raise ValueError("code reference: the test defines check(candidate) but no entry_point names what to pass it")


class CodeVerifier(PooledVerifier):
    """Correct when the completion's program passes the reference tests inside the sandbox."""

    name = "code"
    reads_whole_completion = True  # a program may hold a line that reads like a confidence key

    def __init__(
        self,
        sandbox: Literal["bwrap", "unsafe"] = "bwrap",
        timeout: float = 10.0,
        workers: int | None = None,
        limits: SandboxLimits | None = None,
        python: str | None = None,
        max_chars: int = 1 << 20,
    ) -> None:
        """Check the sandbox once; the thread pool that drives sandboxes starts on the first batch.

        Args:
            sandbox: ``bwrap`` (required unless ``unsafe`` is chosen explicitly; ``unsafe`` warns).
            timeout: Wall-clock seconds per program, sandbox start included.
            workers: Programs run at once; default: the number of CPUs.
            limits: Per-program resource limits; default :class:`SandboxLimits`.
            python: Interpreter inside the sandbox (standard library only); see :class:`Sandbox`.
            max_chars: Longest completion judged, in characters; a longer one fails unparsed.

        Raises:
            ValueError: a non-positive ``timeout``, ``workers`` or ``max_chars``.
            RuntimeError: bubblewrap is missing or unusable and ``sandbox`` is ``bwrap``.
        """
        super().__init__(timeout, workers)
        if max_chars < 1:
            raise ValueError(f"code verifier: max_chars must be >= 1, got {max_chars}")
        self.max_chars = max_chars
        self.sandbox = Sandbox(mode=sandbox, python=python, limits=limits)

    def verify(self, completion: str, reference: Any) -> Verdict:
        if len(completion) > self.max_chars:
            return Verdict(False, f"failed: completion of {len(completion):,} characters is over max_chars")
        ref = parse_code_reference(reference)
        program = ref["prompt"] + extract_code(completion) + "\n"
        job = {"program": program, "prompt": ref["prompt"], "test": ref["test"], "entry_point": ref["entry_point"]}
        run = self.sandbox.run(job, self.timeout)
        return _verdict(run, self.timeout)

    def _judge(self, completions: Sequence[str], references: Sequence[Any]) -> list[Verdict]:
        return list(self._workers().map(lambda pair: safe_verify(self, *pair), zip(completions, references)))

    def _start_pool(self) -> _ThreadPool:
        return _ThreadPool(self.workers, thread_name_prefix="caopd-code")


class _ThreadPool(ThreadPoolExecutor):
    """Threads that each drive one sandbox at a time; :meth:`close` waits for them and drops what is queued."""

    def close(self) -> None:
        self.shutdown(wait=True, cancel_futures=True)


def _verdict(run: SandboxRun, timeout: float) -> Verdict:
    # The candidate's own failures (wrong output, too much output, a killed harness) are wrong answers; running out
    # of time is a timeout, and a sandbox that never started is the verifier's error.
    if run.timed_out:
        return Verdict.timeout(f"failed: time limit ({timeout:g} s) exceeded")
    if run.output_exceeded:
        return Verdict(False, "failed: output limit exceeded")
    if run.passed:
        return Verdict(True, "passed")
    if run.verdict and run.verdict.startswith("FAIL"):
        return Verdict(False, "failed: " + run.verdict[5:][:500])
    tail = run.output.strip()[-300:]
    if not run.started:  # known from bwrap's own report, not from output the candidate could have written
        return Verdict.error(f"error: the sandbox could not start: {tail}")
    return Verdict(False, f"failed: the test harness was killed (exit {run.returncode}){': ' + tail if tail else ''}")
