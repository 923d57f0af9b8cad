"""benchmarks/warm_start_seeds.py runs end to end (a few warm-start steps, a few prompts) and says what it measured."""

import json
import subprocess
import sys

from helpers import REPO


def test_the_benchmark_prints_one_line_per_seed_and_a_summary(tmp_path):
    out = tmp_path / "seeds.jsonl"
    command = [sys.executable, "benchmarks/warm_start_seeds.py", "--seeds", "0", "1", "--limit", "6", "--out", str(out)]
    command += ["--set", "steps=2", "batch_size=4", "--task", "num_train=40", "--threads", "2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seed"] for line in lines] == [0, 1] and all(line["steps"] == 2 for line in lines)
    assert all(line["threads"] == 2 for line in lines)  # not the quickstart config's num_threads: 1
    assert all(0.0 <= line["accuracy"] <= 1.0 and set(line["levels"]) <= {"1+1", "2+1", "2+2", "2*1"} for line in lines)
    assert done.stdout.splitlines()[-1].startswith("accuracy mean ")
