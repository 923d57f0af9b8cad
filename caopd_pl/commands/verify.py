"""``python -m caopd_pl verify``: judge a JSONL file of completions with a verifier.

Each input line is ``{"completion": str, "reference": ...}`` plus any other fields, which are kept. Each output line
is the input object with ``correct`` (bool), ``detail`` (str) and ``status`` (``correct``, ``wrong``, or, for wrong
verdicts the verifier could not decide, ``timeout`` or ``error``) added, in input order. A malformed line (not UTF-8,
bad JSON, not an object, no string ``completion``, no ``reference``) is reported on stderr with its line number and
left out of the output; the rest is judged. Exit status: 0, 1 when some line was malformed, 2 on bad arguments, 3
when the disk filled up (one line naming the filesystem and how many judged lines the output holds).

Nothing is lost: the paths are checked before anything is read or written (an ``--output`` that is the input, a
folder, or in a missing folder stops with one line), and judged lines are written batch by batch, so a run that stops
early keeps every line judged so far. Every judged line is written: a string JSON cannot write as UTF-8 (a lone
surrogate, half of an emoji) is written with ASCII escapes (:func:`caopd_pl.files.json_line`). The output only ever
ends with a whole line: a write cut short by a full disk is cut back to the last whole batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from caopd_pl.errors import DiskFull, UsageError, is_disk_full
from caopd_pl.files import json_line, json_object
from caopd_pl.verifiers import Verdict, Verifier, build


@dataclass
class Tally:
    """Counts printed at the end."""

    judged: int = 0
    correct: int = 0
    timeouts: int = 0
    """Verdicts with status ``timeout`` (counted wrong)."""
    errors: int = 0
    """Verdicts with status ``error``: the verifier raised or could not run (counted wrong)."""
    malformed: int = 0

    def count(self, verdict: Verdict) -> None:
        self.judged += 1
        self.correct += verdict.status == "correct"
        self.timeouts += verdict.status == "timeout"
        self.errors += verdict.status == "error"


def json_objects(handle: BinaryIO, skip: Callable[[int, str], None]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each line of a JSONL file that is a JSON object; blank lines are passed over.

    ``handle`` is opened in binary and each line decoded on its own, so a byte that is not UTF-8 costs its line, not
    the rest of the file. A line that is not UTF-8, not JSON or not an object goes to ``skip(number, reason)``, and
    the reading goes on (``verify`` and ``report`` both read this way).
    """
    for number, raw in enumerate(handle, start=1):
        try:
            line = decode_line(raw, number)
            if not line.strip():
                continue
            yield number, json_object(line, f"line {number}")
        except ValueError as err:
            skip(number, str(err).removeprefix(f"line {number}: "))


def decode_line(raw: bytes, number: int) -> str:
    """One line of a JSONL file read as bytes, decoded as UTF-8 (a byte-order mark on line 1 is dropped).

    Raises:
        ValueError: the line is not UTF-8 (message names the line number, the byte and its column).
    """
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"line {number}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})") from err


def records(handle: BinaryIO, tally: Tally) -> Iterator[dict[str, Any]]:
    """The records of ``handle`` with a string ``completion`` and a ``reference``; other lines are reported on
    stderr, counted as malformed, and skipped."""

    def skip(number: int, reason: str) -> None:
        tally.malformed += 1
        tqdm.write(f"caopd_pl verify: skipped line {number}: {reason}", file=sys.stderr)  # keeps the progress bar

    for number, record in json_objects(handle, skip):
        if not isinstance(record.get("completion"), str):
            skip(number, "'completion' must be a string")
        elif "reference" not in record:
            skip(number, "missing 'reference'")
        else:
            yield record


def batches(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Output:
    """The output file, written a batch at a time; a batch the disk cannot hold is cut back off.

    Args:
        handle: the file, opened ``wb`` unbuffered (each batch goes out in ``os.write`` calls, none left in a buffer).
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.written, self.lines = handle, 0, 0

    def write_batch(self, lines: list[bytes]) -> None:
        """Append ``lines``, all of them or (raising) none.

        Raises:
            DiskFull: no space or quota left; the file is cut back to the lines written before this batch.
        """
        data = memoryview(b"".join(lines))
        try:
            while data:
                data = data[self.handle.write(data) :]
        except OSError as err:
            if not is_disk_full(err):
                raise
            self.handle.truncate(self.written)  # needs no space: the file ends with a whole line again
            self.handle.seek(self.written)
            raise DiskFull(err, self.handle.name, f"the output holds the first {self.lines} judged lines") from err
        self.written += sum(len(line) for line in lines)
        self.lines += len(lines)


def judge(verifier: Verifier, batch: list[dict[str, Any]], out: Output, tally: Tally) -> None:
    verdicts = verifier.verify_batch([r["completion"] for r in batch], [r["reference"] for r in batch])
    lines = []
    for record, verdict in zip(batch, verdicts):
        judged = {**record, "correct": verdict.correct, "detail": verdict.detail, "status": verdict.status}
        lines.append(json_line(judged))
    out.write_batch(lines)  # a run that stops later keeps this batch
    for verdict in verdicts:
        tally.count(verdict)


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
        message = str(err)  # the registry's line names the key itself (verifier='x' is not a registered verifier)
        raise UsageError(
            f"--{message}" if message.startswith("verifier=") else f"--verifier={name!r}: {message}"
        ) from err


def check_paths(source: Path, target: Path) -> None:
    """Stop, before anything is read or written, on paths that cannot work or would destroy data.

    Raises:
        UsageError: ``source`` is not a file; ``target`` is ``source`` itself (by any name: opening it for writing
            would empty the input before a line is read), a folder, or in a folder that does not exist.
    """
    if not source.is_file():
        what = "a folder" if source.is_dir() else "no such file"
        raise UsageError(f"--input={str(source)!r}: {what}; give a JSONL with completion and reference per line")
    if target.exists() and os.path.samefile(source, target):
        raise UsageError(
            f"--output={str(target)!r} is the input file (--input={str(source)!r}); writing it would erase the "
            "input: give another path"
        )
    if target.is_dir():
        raise UsageError(f"--output={str(target)!r}: a folder; give a file path, e.g. {str(target / 'judged.jsonl')!r}")
    if not target.parent.is_dir():
        raise UsageError(f"--output={str(target)!r}: folder {str(target.parent)!r} does not exist; create it first")


def open_output(target: Path) -> BinaryIO:
    """``target`` opened for writing, in binary and unbuffered (:class:`Output`).

    Raises:
        UsageError: it cannot be written (permissions, a read-only filesystem); the message names the reason.
    """
    try:
        return target.open("wb", buffering=0)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(err, target) from err
        raise UsageError(f"--output={str(target)!r}: cannot write it ({err.strerror}); give another path") from err


def run(args: argparse.Namespace) -> Tally:
    source, target = Path(args.input), Path(args.output)
    check_paths(source, target)
    tally = Tally()
    verifier = build_verifier(args.verifier, args.init_args)
    try:
        with source.open("rb") as source_file, open_output(target) as handle:
            out = Output(handle)
            name = verifier.name or type(verifier).__name__
            progress = tqdm(desc=f"verify ({name})", unit="line", disable=args.quiet)
            for batch in batches(records(source_file, tally), args.batch_size):
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

    Raises:
        UsageError: bad arguments (status 2).
        DiskFull: the output's disk filled up (status 3); the output holds the lines judged before, whole.
    """
    parser = argparse.ArgumentParser(prog="python -m caopd_pl verify", description=__doc__.split("\n\n")[1])
    parser.add_argument("--verifier", required=True, help="registered name (see `verifiers`), class path, or JSON spec")
    parser.add_argument("--init-args", help="JSON object of constructor arguments, e.g. '{\"timeout\": 5}'")
    parser.add_argument("--input", required=True, help="JSONL with completion and reference per line")
    parser.add_argument("--output", required=True, help="JSONL to write (input fields + correct, detail, status)")
    parser.add_argument("--batch-size", type=int, default=256, help="lines judged together (in parallel)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    tally = run(args)
    print(
        f"judged {tally.judged} lines: {tally.correct} correct, {tally.timeouts} timeouts, {tally.errors} verifier "
        f"errors, {tally.malformed} malformed lines skipped -> {args.output}",
        file=sys.stderr,
    )
    return 1 if tally.malformed else 0
