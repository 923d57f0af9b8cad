"""The project's one error type for bad input: ``python -m caopd_pl`` prints it as one line and exits with status 2.

A :class:`UsageError` says what the user gave (the config key and its value) and how to fix it. Anything else that
escapes a command is a bug and keeps its traceback. ``CAOPD_PL_TRACEBACK=1`` shows the traceback of a usage error
too (to debug the check itself).
"""

from __future__ import annotations

import os

TRACEBACK_ENV = "CAOPD_PL_TRACEBACK"


class UsageError(ValueError):
    """Bad input the user can fix: a config value, a path, an option; the message is one line naming all three.

    A ``ValueError`` so that code validating its arguments (and tests expecting ``ValueError``) need not know the
    command line exists.
    """


def one_line(message: str) -> str:
    """``message`` with its lines joined by ``"; "`` (argument parsers report nested failures over several lines)."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def show_tracebacks() -> bool:
    """Whether the user asked for tracebacks of usage errors (``CAOPD_PL_TRACEBACK=1``)."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0", "false", "False")
