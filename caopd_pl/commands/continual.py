"""``python -m caopd_pl continual``: run (or resume) a continual-learning sequence and compare calibrations.

Reads a ``configs/continual/*.yaml`` (see :mod:`caopd_pl.continual.config`) and runs
:class:`caopd_pl.continual.runner.ContinualRunner`. Re-running the same command resumes a killed run: finished
stages and evaluations are reused. Exit status 0 on success, 2 on a bad configuration. The runner (and with it
torch and Lightning) loads only after the arguments parse, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from caopd_pl.errors import UsageError

EXAMPLE = "configs/continual/quick.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m caopd_pl continual",
        description="Train a task sequence stage after stage; measure accuracy and calibration retention.",
    )
    parser.add_argument("--config", required=True, help=f"a continual YAML, e.g. {EXAMPLE}")
    parser.add_argument("--out", default=None, help="run directory (default: the config's `out`)")
    parser.add_argument(
        "--calibration",
        choices=["none", "empirical"],
        action="append",
        default=None,
        help="run only this data.calibration (repeatable; default: the config's `calibrations`)",
    )
    # Test hook: SIGKILL the process during the training of this stage (tests/continual/test_continual_resume.py).
    parser.add_argument("--kill-during", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not Path(args.config).is_file():
        raise UsageError(f"--config={args.config!r}: no such file; give a continual YAML such as {EXAMPLE}")
    from caopd_pl.continual.config import load_config

    try:
        config = load_config(args.config, out=args.out)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise UsageError(f"--config={args.config!r}: {err}") from err
    from caopd_pl.continual.runner import ContinualRunner, comparison_markdown

    started = time.perf_counter()
    summaries = ContinualRunner(config, kill_during=args.kill_during).run(args.calibration)
    if len(summaries) == 1:
        print(comparison_markdown({name: summary["derived"] for name, summary in summaries.items()}))
    print(f"[continual] done in {time.perf_counter() - started:.0f} s; results under {config.out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
