"""``python -m caopd_pl verify``: judge a JSONL file of completions with a verifier.

Each input line is ``{"completion": str, "reference": ...}`` plus any other fields, which are kept. Each output line
is the input object with ``correct`` (bool) and ``detail`` (str) added, in input order. A malformed line (bad JSON, not
an object, no string ``completion``, no ``reference``) is reported on stderr with its line number and left out of the
output; the rest is judged. Exit status: 0, or 1 when some line was malformed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from caopd_pl.errors import UsageError
from caopd_pl.verifiers import Verifier, build


@dataclass
class Tally:
    """Counts printed at the end."""

    judged: int = 0
    correct: int = 0
    failed: int = 0
    """Verdicts where the verifier raised or timed out (counted wrong)."""
    malformed: int = 0


def parse_line(line: str, number: int) -> dict[str, Any]:
    """One input record.

    Raises:
        ValueError: the line is not a JSON object with a string ``completion`` and a ``reference`` (message names
            the line number).
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"line {number}: not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(record, dict):
        raise ValueError(f"line {number}: expected a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("completion"), str):
        raise ValueError(f"line {number}: 'completion' must be a string")
    if "reference" not in record:
        raise ValueError(f"line {number}: missing 'reference'")
    return record


def records(handle: TextIO, tally: Tally) -> Iterator[dict[str, Any]]:
    """Well-formed records of ``handle``; malformed lines are reported on stderr and counted."""
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield parse_line(line, number)
        except ValueError as err:
            tally.malformed += 1
            tqdm.write(f"caopd_pl verify: skipped {err}", file=sys.stderr)  # keeps the progress bar intact


def batches(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def judge(verifier: Verifier, batch: list[dict[str, Any]], out: TextIO, tally: Tally) -> None:
    verdicts = verifier.verify_batch([r["completion"] for r in batch], [r["reference"] for r in batch])
    for record, verdict in zip(batch, verdicts):
        out.write(json.dumps({**record, "correct": verdict.correct, "detail": verdict.detail}, ensure_ascii=False))
        out.write("\n")
        tally.judged += 1
        tally.correct += verdict.correct
        tally.failed += verdict.failed


def build_verifier(name: str, init_args: str | None) -> Verifier:
    """A verifier from a name, class path or ``{class_path, init_args}`` JSON, with optional JSON init args.

    Raises:
        UsageError: unparsable JSON, an unknown verifier, or arguments its constructor rejects.
    """
    try:
        spec: Any = json.loads(name) if name.lstrip().startswith("{") else name
        kwargs = json.loads(init_args) if init_args else {}
    except json.JSONDecodeError as err:
        raise UsageError(f"--verifier/--init-args: not valid JSON ({err.msg}); quote the JSON in the shell") from err
    if not isinstance(kwargs, dict):
        raise UsageError(f"--init-args={init_args!r} must be a JSON object, e.g. '{{\"timeout\": 5}}'")
    try:
        return build(spec, **kwargs)
    except (ValueError, TypeError, ImportError) as err:
        raise UsageError(f"--verifier={name!r}: {err}") from err


def run(args: argparse.Namespace) -> Tally:
    if not Path(args.input).is_file():
        raise UsageError(f"--input={args.input!r}: no such file; give a JSONL with completion and reference per line")
    tally = Tally()
    verifier = build_verifier(args.verifier, args.init_args)
    try:
        with Path(args.input).open(encoding="utf-8") as source, Path(args.output).open("w", encoding="utf-8") as out:
            name = verifier.name or type(verifier).__name__
            progress = tqdm(desc=f"verify ({name})", unit="line", disable=args.quiet)
            for batch in batches(records(source, tally), args.batch_size):
                judge(verifier, batch, out, tally)
                progress.update(len(batch))
                progress.set_postfix(correct=tally.correct, malformed=tally.malformed)
            progress.close()
    finally:
        verifier.close()
    return tally


def main(argv: list[str] | None = None) -> int:
    """Judge ``--input`` with ``--verifier`` and write ``--output``.

    Args:
        argv: Command-line arguments after ``verify``.

    Returns:
        0, or 1 when some input line was malformed (the others are still judged and written).
    """
    parser = argparse.ArgumentParser(prog="python -m caopd_pl verify", description=__doc__.split("\n\n")[1])
    parser.add_argument("--verifier", required=True, help="registered name (see `verifiers`), class path, or JSON spec")
    parser.add_argument("--init-args", help="JSON object of constructor arguments, e.g. '{\"timeout\": 5}'")
    parser.add_argument("--input", required=True, help="JSONL with completion and reference per line")
    parser.add_argument("--output", required=True, help="JSONL to write (input fields + correct + detail)")
    parser.add_argument("--batch-size", type=int, default=256, help="lines judged together (in parallel)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    tally = run(args)
    print(
        f"judged {tally.judged} lines: {tally.correct} correct, {tally.failed} verifier errors/timeouts, "
        f"{tally.malformed} malformed lines skipped -> {args.output}",
        file=sys.stderr,
    )
    return 1 if tally.malformed else 0
