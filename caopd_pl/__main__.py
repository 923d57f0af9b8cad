"""``python -m caopd_pl <command>``: Lightning's fit/validate/test/predict, and the project's own tools.

Lightning commands go to :func:`caopd_pl.cli.cli_main`; ``verify``, ``report``, ``verifiers`` and ``continual``
go to their modules under :mod:`caopd_pl.commands`.
"""

from __future__ import annotations

import importlib
import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
TOOLS = {
    "verify": "caopd_pl.commands.verify",
    "report": "caopd_pl.commands.report",
    "verifiers": "caopd_pl.commands.verifiers",
    "continual": "caopd_pl.commands.continual",
}

USAGE = f"""usage: python -m caopd_pl <command> [options]

Lightning commands (each takes --config X.yaml; --help lists every option, --print_config the resolved config):
  {", ".join(LIGHTNING_COMMANDS)}
Tools (each takes --help):
  verify      judge completions in a JSONL file with a verifier
  report      calibration metrics and reliability diagram of judged completions
  verifiers   list the installed verifiers and where each comes from
  continual   train a task sequence stage by stage; accuracy and calibration retention (none vs empirical)
"""


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if from_command_line else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in TOOLS:
        return int(importlib.import_module(TOOLS[command]).main(rest) or 0)
    if command in LIGHTNING_COMMANDS or command.startswith("-"):
        from caopd_pl.cli import cli_main

        cli_main(None if from_command_line else argv)
        return 0
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
