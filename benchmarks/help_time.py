"""Wall time of ``python -m caopd_pl <command> --help`` for every command (target: under 2 s each).

Each command runs in a fresh process, as a user types it. The Lightning commands' help comes from a cache
(:mod:`caopd_pl.help_cache`); the benchmark points the cache at an empty temporary folder, so the first (``cold``)
call builds it, importing Lightning, and the later ones (``warm``, the median of ``--repeats``) read it. The tools
import nothing heavy before parsing their arguments, so cold and warm are alike. Prints the machine's load average
beside the times: on a shared machine they move with it.

    .venv/bin/python benchmarks/help_time.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from caopd_pl.__main__ import LIGHTNING_COMMANDS, TOOLS

TARGET_S = 2.0


def help_seconds(command: list[str], env: dict[str, str]) -> float:
    """Wall time of one ``python -m caopd_pl COMMAND --help`` (a failure raises)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "caopd_pl", *command, "--help"], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm calls per command (the median is printed)")
    args = parser.parse_args(argv)
    commands = [[], *([c] for c in LIGHTNING_COMMANDS), *([c] for c in TOOLS)]
    print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    print(f"{'command':<12}{'cold s':>8}{'warm s':>8}  under {TARGET_S:.0f} s warm")
    slow = 0
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        for command in commands:
            cold = help_seconds(command, env)
            warm = statistics.median(help_seconds(command, env) for _ in range(args.repeats))
            slow += warm >= TARGET_S
            print(f"{' '.join(command) or '(none)':<12}{cold:>8.2f}{warm:>8.2f}  {'yes' if warm < TARGET_S else 'NO'}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) after")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
