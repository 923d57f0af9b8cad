"""``python -m caopd_pl verifiers``: the installed verifiers and where each comes from."""

from __future__ import annotations

import argparse
import json

from caopd_pl.verifiers.registry import ENTRY_POINT_GROUP, available


def main(argv: list[str] | None = None) -> int:
    """List verifiers: name and origin (built-in, or the entry point and distribution that registered it).

    Args:
        argv: Command-line arguments after ``verifiers``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m caopd_pl verifiers",
        description=f"List installed verifiers (built-ins and plugins in entry-point group {ENTRY_POINT_GROUP!r}).",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object name -> origin")
    args = parser.parse_args(argv)
    found = available()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    width = max(map(len, found), default=4)
    print(f"{'name':<{width}}  origin")
    for name, origin in found.items():
        print(f"{name:<{width}}  {origin}")
    return 0
