"""``python -m caopd_pl report``: calibration metrics of judged completions (the training code's implementation).

Input: JSONL lines holding ``completion`` (its ``Confidence:`` is parsed with :func:`caopd_pl.confidence.
parse_confidence`; none counts as 0 and lowers format adherence) and ``correct`` (bool), e.g. the output of
``verify``, whose ``status`` column is tallied too (``timeouts``, ``verifier_errors``: wrong verdicts the verifier
could not decide; a line without ``status`` counts in neither). Writes ``DIR/metrics.json`` and ``DIR/reliability.png``
and prints a table. Malformed lines (not UTF-8, bad JSON, no ``completion`` or ``correct``, a ``status`` that is not
one of verify's or disagrees with ``correct``) are reported with their line numbers and skipped; exit status 1 if
there were any, 2 if no line was usable, or the input or ``--out`` is not usable (one line), 3 if the disk filled up
(one line naming the filesystem). The two files are written as a whole or not at all: a report that fails leaves
``DIR`` as it was. torch and the plotting code load only after the arguments parse, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caopd_pl.errors import DiskFull, UsageError, is_disk_full

if TYPE_CHECKING:
    import torch


@dataclass
class Judged:
    """What ``report`` reads from a file of judged completions."""

    rows: list[tuple[float, bool, bool]] = field(default_factory=list)
    """``(stated confidence, correct, confidence parsed)`` per usable line."""
    statuses: Counter[str] = field(default_factory=Counter)
    """Verdict status -> lines, over the usable lines that carry one."""
    malformed: int = 0
    """Lines skipped (each reported on stderr)."""


def read_judged(path: Path) -> Judged:
    """The usable lines of ``path``; malformed lines are reported on stderr and counted.

    Raises:
        UsageError: ``path`` is not a file.
    """
    from caopd_pl.commands.verify import json_objects
    from caopd_pl.confidence import parse_confidence

    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise UsageError(f"--input={str(path)!r}: {what}; give a JSONL of judged completions (verify's output)")
    judged = Judged()

    def skip(number: int, reason: str) -> None:
        judged.malformed += 1
        print(f"caopd_pl report: skipped line {number}: {reason}", file=sys.stderr)

    with path.open("rb") as handle:  # binary: one bad byte costs its line, not the file
        for number, record in json_objects(handle, skip):
            problem = _problem(record)
            if problem:
                skip(number, problem)
                continue
            parsed = parse_confidence(record["completion"])
            judged.rows.append((parsed.value, record["correct"], parsed.parsed))
            judged.statuses.update([record["status"]] if "status" in record else [])
    return judged


def _problem(record: dict[str, Any]) -> str | None:
    """Why ``record`` cannot be measured, or None."""
    from caopd_pl.verifiers.base import STATUSES

    if not isinstance(record.get("completion"), str):
        return "expected an object with a string 'completion'"
    if not isinstance(record.get("correct"), bool):
        return "'correct' must be true or false"
    status = record.get("status", "correct" if record["correct"] else "wrong")
    if status not in STATUSES or (status == "correct") != record["correct"]:
        return f"'status' must be one of {', '.join(STATUSES)} and agree with 'correct'; got {status!r}"
    return None


def summarise(rows: list[tuple[float, bool, bool]]) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    import torch

    from caopd_pl.metrics import calibration_summary

    confidence = torch.tensor([r[0] for r in rows], dtype=torch.float64)  # (N,)
    correct = torch.tensor([r[1] for r in rows], dtype=torch.bool)  # (N,)
    parsed = torch.tensor([r[2] for r in rows], dtype=torch.bool)  # (N,)
    return calibration_summary(confidence, correct, parsed), confidence, correct


def table(metrics: dict[str, Any]) -> str:
    lines = [f"{'metric':<18}{'value':>10}", "-" * 28]
    for key, value in metrics.items():
        lines.append(f"{key:<18}{value:>10}" if isinstance(value, int) else f"{key:<18}{value:>10.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Compute the calibration report of ``--input`` into ``--out``.

    Args:
        argv: Command-line arguments after ``report``.

    Returns:
        0; 1 when some lines were malformed; 2 when no line was usable.

    Raises:
        UsageError: bad arguments or paths (status 2).
        DiskFull: the disk filled up (status 3); ``--out`` is as it was.
    """
    parser = argparse.ArgumentParser(prog="python -m caopd_pl report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="JSONL with completion and correct per line (verify's output)")
    parser.add_argument("--out", required=True, help="folder for metrics.json and reliability.png")
    parser.add_argument("--title", default="", help="title of the reliability diagram")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out={args.out!r}: a file; give a folder for metrics.json and reliability.png")
    judged = read_judged(Path(args.input))
    if not judged.rows:
        print(f"caopd_pl report: no usable line in {args.input}", file=sys.stderr)
        return 2
    from caopd_pl.metrics import without_nan

    metrics, confidence, correct = summarise(judged.rows)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file on the way, no permission; a full disk is reported as such
        if is_disk_full(err):
            raise DiskFull(err, out) from err
        raise UsageError(f"--out={args.out!r}: cannot create the folder ({err.strerror}); give another path") from err
    tallies = {"timeouts": judged.statuses["timeout"], "verifier_errors": judged.statuses["error"]}
    # undefined SPR/AUROC as null, valid JSON
    payload = {**without_nan(metrics), **tallies, "malformed_lines": judged.malformed}
    write_report(out, payload, confidence, correct, title=args.title or Path(args.input).name)
    print(table({**metrics, **tallies}))
    print(f"wrote {out / 'metrics.json'} and {out / 'reliability.png'}")
    return 1 if judged.malformed else 0


def write_report(
    out: Path, metrics: dict[str, Any], confidence: torch.Tensor, correct: torch.Tensor, title: str
) -> None:
    """``out/metrics.json`` and ``out/reliability.png``, both or (on a full disk) neither.

    Raises:
        DiskFull: no space or quota left; ``out`` is as it was.
    """
    import json

    from caopd_pl.files import atomic_write_files, json_value
    from caopd_pl.plots import reliability_diagram

    text = json.dumps(metrics, indent=2, default=json_value) + "\n"
    atomic_write_files(
        {
            out / "metrics.json": lambda file: file.write(text.encode("utf-8")),
            out / "reliability.png": lambda file: reliability_diagram(confidence, correct, file, title=title),
        }
    )
