"""The real pretrained model (SmolLM2-135M-Instruct, pulled from the package index) through the real CLI: a few
steps of ``fit`` on a reasoning-gym task with vLLM rollouts, then ``test``, each asserting on what it wrote.

``configs/real/smollm2_chain_sum.yaml`` as shipped, shrunk to seconds: 2 warm-start steps, one epoch of 2 prompts x
K = 2 rollouts, 4 evaluation prompts per split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from helpers import metrics_rows

from caopd_pl.__main__ import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def _small_real_config(root: Path, model: Path) -> Path:
    config = yaml.safe_load((REPO / "configs/real/smollm2_chain_sum.yaml").read_text())
    config["trainer"] |= {"max_epochs": 1, "default_root_dir": str(root), "enable_progress_bar": False}
    config["model"]["model"]["name_or_path"] = str(model)
    config["model"]["warm_start"] |= {"steps": 2, "batch_size": 2}
    config["model"]["eval_max_new_tokens"] = 16
    config["data"]["task"]["init_args"] |= {"num_train": 16, "num_val": 4, "num_test": 4, "num_ood": 4}
    config["data"]["rollout"] |= {"num_samples": 2, "max_new_tokens": 16}
    config["data"] |= {"prompts_per_epoch": 2, "batch_size": 2, "max_eval_prompts": 4}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_and_test_the_real_model_on_a_reasoning_gym_task(tmp_path, smollm2_dir, monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    config = _small_real_config(tmp_path, smollm2_dir)
    assert main(["fit", "--config", str(config)]) == 0

    rows = metrics_rows(tmp_path)
    warm = [float(row["warmstart/loss"]) for row in rows if row.get("warmstart/loss")]
    assert len(warm) == 2 and all(math.isfinite(loss) for loss in warm)
    losses = [float(row["train/loss"]) for row in rows if row.get("train/loss")]
    assert losses and all(math.isfinite(loss) and loss >= 0 for loss in losses)  # a KL divergence
    examples = [float(row["rollout/examples"]) for row in rows if row.get("rollout/examples")]
    assert examples == [4.0]  # 2 prompts x K = 2, sampled by vLLM from the warm-started student
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == 2  # 4 completions / batch 2
    student = checkpoint["state_dict"]["student.model.embed_tokens.weight"]
    assert student.shape == (49152, 576)  # SmolLM2-135M's vocabulary and width

    ckpt = str(tmp_path / "checkpoints/last.ckpt")
    assert main(["test", "--config", str(config), "--ckpt_path", ckpt]) == 0
    metrics = json.loads((tmp_path / "test" / "last" / "metrics.json").read_text())
    assert metrics["n"] == 4 and 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["format_adherence"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "test" / "last" / "test_predictions.jsonl").open()]
    assert len(records) == 4 and all(record["completion"] for record in records)
