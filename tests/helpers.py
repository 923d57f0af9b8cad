"""Configs, readers and batches shared by the tests (imported as ``helpers``: tests/ is on ``sys.path``)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
"""``model.model.tiny`` of the test configs: a tiny model that trains in seconds."""


def small_config(root: Path, max_epochs: int = 2) -> Path:
    """The quickstart config, shrunk to seconds and pointed at ``root``."""
    config = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    trainer = config["trainer"]
    trainer |= {
        "max_epochs": max_epochs,
        "default_root_dir": str(root),
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
    }
    model = config["model"]
    model["model"]["tiny"] = dict(TINY_MODEL)
    model["warm_start"] |= {"steps": 4, "batch_size": 8}
    model["eval_max_new_tokens"] = 8
    data = config["data"]
    data["task"]["init_args"] |= {"num_train": 40, "num_val": 8, "num_test": 8}
    data["rollout"] |= {"num_samples": 2, "max_new_tokens": 8}
    data |= {"prompts_per_epoch": 4, "batch_size": 4, "max_eval_prompts": 8}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def metrics_rows(root: Path) -> list[dict]:
    """The rows of the run's ``logs/version_*/metrics.csv`` (exactly one run under ``root``)."""
    (path,) = root.glob("logs/version_*/metrics.csv")
    return list(csv.DictReader(path.open()))


def distill_batch(vocab: int) -> dict[str, torch.Tensor]:
    """A batch of two 8-token sequences whose teacher side has a 5-token privileged prefix, 5 completion tokens each.

    Token ids are drawn from [3, vocab); the masks select positions 2-6 of the student and 7-11 of the teacher.
    """
    student_ids = torch.randint(3, vocab, (2, 8))
    teacher_ids = torch.cat([torch.randint(3, vocab, (2, 5)), student_ids], dim=1)  # a privileged prefix, same tokens
    student_mask, teacher_mask = torch.zeros(2, 8, dtype=torch.bool), torch.zeros(2, 13, dtype=torch.bool)
    student_mask[:, 2:7] = teacher_mask[:, 7:12] = True
    batch = dict(student_ids=student_ids, student_attention=torch.ones_like(student_ids), student_mask=student_mask)
    return batch | dict(
        teacher_ids=teacher_ids, teacher_attention=torch.ones_like(teacher_ids), teacher_mask=teacher_mask
    )
