"""``python -m caopd_pl continual``: run (or resume) a continual-learning sequence and compare calibrations.

Reads a ``configs/continual/*.yaml`` with the jsonargparse parser of :mod:`caopd_pl.continual.config` (every field
of the config is also an option: ``--out DIR``, ``--seed 3``) and runs
:class:`caopd_pl.continual.runner.ContinualRunner`. Re-running the same command resumes a killed run: finished
stages and evaluations are reused; a run directory started under another configuration is refused before anything
runs. Exit status 0 on success, 2 on a bad configuration or a run directory of another one (one line). The runner
(and with it torch and Lightning) loads only after the arguments parse, so ``--help`` and a bad config answer at
once.
"""

from __future__ import annotations

import sys
import time

from jsonargparse import ArgumentParser, set_parsing_settings

from caopd_pl.continual.config import build_parser as config_parser
from caopd_pl.continual.config import from_namespace, parse_args
from caopd_pl.errors import UsageError

CALIBRATIONS = ("none", "empirical", "sdft", "caopd", "rlvr", "rlcr")  # continual.config.Calibration


def build_parser() -> ArgumentParser:
    """The continual config's parser, plus ``--calibration`` (which calibrations of it to run now)."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # --help shows each field's docstring
    parser = config_parser()
    parser.add_argument(
        "--calibration",
        action="append",
        default=None,
        help="run only this one of the config's calibrations: none, empirical, or a method (sdft, caopd, rlvr, rlcr); "
        "repeatable",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    namespace = parse_args(build_parser(), sys.argv[1:] if argv is None else list(argv))
    config, calibrations = from_namespace(namespace), namespace.calibration
    bad = [value for value in calibrations or [] if value not in CALIBRATIONS]
    if bad:
        raise UsageError(f"--calibration={bad[0]!r}: not a calibration; use none or empirical")
    from caopd_pl.continual.runner import ContinualRunner, comparison_markdown

    started = time.perf_counter()
    summaries = ContinualRunner(config).run(calibrations)
    if len(summaries) == 1:
        print(comparison_markdown({name: summary["derived"] for name, summary in summaries.items()}))
    print(f"[continual] done in {time.perf_counter() - started:.0f} s; results under {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
