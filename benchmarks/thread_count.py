"""How the quickstart's speed depends on torch's thread count, on an idle CPU and beside a competing process.

The embedded default's model is tiny (0.8M parameters): each op is so small that a parallel region spends most of
its time at the barrier, waiting for its slowest thread. When another process holds a core, that thread is
descheduled for whole time slices and every op waits for it. This benchmark runs a shortened quickstart ``fit``
(the warm start and one epoch of rollouts and distillation) with ``--num_threads 1`` and ``2``, alone and beside one
busy process (a pure-Python loop that holds one core), and prints the wall time of each.

    python benchmarks/thread_count.py [--warm-start-steps 200] [--threads 1 2]

Run it on an otherwise idle machine: it prints the load average before it starts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY = "while True: pass"


def fit_seconds(threads: int, steps: int, root: str) -> float:
    """Wall time of a shortened quickstart fit with ``threads`` torch threads."""
    command = [
        sys.executable,
        "-m",
        "caopd_pl",
        "fit",
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        f"--num_threads={threads}",
        f"--model.warm_start.steps={steps}",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
    ]
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-start-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"shortened quickstart fit: {args.warm_start_steps} warm-start steps + 1 epoch")
    for competing in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", BUSY]) if competing else None
        try:
            for threads in args.threads:
                with tempfile.TemporaryDirectory() as root:
                    seconds = fit_seconds(threads, args.warm_start_steps, root)
                where = "beside 1 busy process" if competing else "idle"
                print(f"num_threads {threads}  {where:22s} {seconds:7.1f} s")
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()


if __name__ == "__main__":
    main()
