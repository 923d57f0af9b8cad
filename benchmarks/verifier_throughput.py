"""Verifier throughput: math (target: 1,000 distinct completions in at most 3 s on 2 cores) and sandboxed code
(target: at least 10 programs per second on 2 cores).

Run: ``python benchmarks/verifier_throughput.py [--math N] [--code N] [--workers W]``. Pools are started and warmed
once before timing (in training they live for the whole run); the start-up cost is printed separately. Exit status 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from caopd_pl.verifiers.code import CodeVerifier
from caopd_pl.verifiers.math import MathVerifier


def math_cases(n: int) -> tuple[list[str], list[str]]:
    """Distinct completions whose answers differ textually from the reference, so math-verify parses each one."""
    completions, references = [], []
    for i in range(n):
        a, b = i + 2, i + 3
        if i % 2:
            boxed = f"\\boxed{{\\frac{{{a}}}{{{b}}}}}"
            completions.append(f"Step {i}: simplify.\nSo the result is ${boxed}$.\nConfidence: 0.8")
        else:
            completions.append(f"Working {i}... The answer is {a / b + (i % 4 == 0):.6f}\nConfidence: 0.6")
        references.append(f"{a}/{b}")
    return completions, references


def code_cases(n: int) -> tuple[list[str], list[dict]]:
    test = "def check(candidate):\n" + "".join(f"    assert candidate({k}) == {k * k + 1}\n" for k in range(5))
    body = "```python\ndef f(x):\n    # variant {i}\n    return x * x + {c}\n```"
    completions = [body.format(i=i, c=1 if i % 5 else 2) for i in range(n)]
    return completions, [{"test": test, "entry_point": "f"} for _ in range(n)]


def timed(verifier, completions, references) -> tuple[float, int]:
    start = time.perf_counter()
    verdicts = verifier.verify_batch(completions, references)
    return time.perf_counter() - start, sum(v.correct for v in verdicts)


def bench_math(n: int, workers: int) -> dict:
    verifier = MathVerifier(workers=workers)
    start = time.perf_counter()
    verifier.verify_batch(*math_cases(4))
    startup = time.perf_counter() - start
    seconds, correct = timed(verifier, *math_cases(n))
    verifier.close()
    return {
        "items": n,
        "seconds": round(seconds, 3),
        "per_second": round(n / seconds, 1),
        "correct": correct,
        "startup_seconds": round(startup, 3),
        "target_met": n < 1000 or seconds * 1000 / n <= 3.0,
    }


def bench_code(n: int, workers: int) -> dict:
    if shutil.which("bwrap") is None:
        return {"skipped": "bubblewrap is not installed"}
    verifier = CodeVerifier(workers=workers)
    verifier.verify_batch(*code_cases(2))
    seconds, correct = timed(verifier, *code_cases(n))
    verifier.close()
    return {
        "programs": n,
        "seconds": round(seconds, 3),
        "per_second": round(n / seconds, 1),
        "correct": correct,
        "target_met": n / seconds >= 10,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--math", type=int, default=1000, help="math completions (0 skips)")
    parser.add_argument("--code", type=int, default=50, help="sandboxed programs (0 skips)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes / concurrent sandboxes")
    args = parser.parse_args(argv)
    report = {}
    if args.math:
        report["math"] = bench_math(args.math, args.workers)
    if args.code:
        report["code"] = bench_code(args.code, args.workers)
    print(json.dumps(report, indent=2))
    return 0 if all(part.get("target_met", True) for part in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
