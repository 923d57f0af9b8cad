"""Data parallelism on CPU: two DDP processes (gloo) through the real entry point.

Each rank samples, verifies and revises its own prompts; Lightning re-launches ``python -m caopd_pl`` for rank 1.
"""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import small_config


@pytest.mark.slow
def test_two_process_ddp_fit(tmp_path):
    config = small_config(tmp_path, max_epochs=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "caopd_pl",
        "fit",
        "--config",
        str(config),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.enable_progress_bar",
        "false",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False)
    # 4 prompts x 2 samples per epoch, split over 2 ranks: 4 examples per rank, batch 4 -> 1 step per epoch.
    assert checkpoint["global_step"] == 2
    (metrics,) = tmp_path.glob("logs/version_*/metrics.csv")
    rows = [row for row in csv.DictReader(metrics.open()) if row.get("rollout/examples")]
    assert [float(row["rollout/examples"]) for row in rows] == [4.0, 4.0]  # per rank, averaged over ranks

    # Evaluation on two ranks: every rank answers every prompt, rank 0 writes each record once.
    test = [*command[:3], "test", *command[4:], "--ckpt_path", str(tmp_path / "checkpoints/last.ckpt")]
    done = subprocess.run(test, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (predictions,) = tmp_path.glob("test/*/test_predictions.jsonl")
    ids = [json.loads(line)["id"] for line in predictions.read_text().splitlines()]
    assert len(ids) == 8 and len(set(ids)) == 8  # num_test: 8 prompts, none twice
