"""``python -m caopd_pl <command> [options]``: the commands are in :mod:`caopd_pl.commands`.

An error the user can fix prints one line and exits with its own status (:func:`caopd_pl.errors.one_line_report`:
2 for bad input, 3 for a full disk); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from caopd_pl.commands import USAGE, run_command
from caopd_pl.errors import one_line_report


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 on a usage error, 3 on a full disk: one line on stderr)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        return run_command(args[0], args[1:], argv)
    except Exception as err:
        report = one_line_report(err)
        if report is None:
            raise
        status, line = report
        print(f"caopd_pl {args[0]}: error: {line}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
