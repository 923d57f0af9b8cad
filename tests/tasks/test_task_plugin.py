"""A new task is one class, with no edit anywhere else: a generated task (a :class:`Task`) and a file-backed one (a
:class:`FileTask` over a JSONL written here), each named by class path as a config names any task
(``data.task.class_path: test_task_plugin.AddOneTask``; pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from caopd_pl.__main__ import main
from caopd_pl.tasks.base import GeneratedTask, TaskExample
from caopd_pl.tasks.sources import FileTask

REPO = Path(__file__).resolve().parents[2]


class AddOneTask(GeneratedTask):
    """``What is 41 plus one?`` -> ``42``, judged by ``exact``: a generated task in one class."""

    def __init__(self, size: int = 16, seed: int = 0) -> None:
        """Args:
        size: Prompts per split.
        seed: Which numbers (the splits never share one).
        """
        super().__init__("exact")
        self.size, self.seed = size, seed

    def generate(self) -> dict[str, list[TaskExample]]:
        numbers = random.Random(self.seed).sample(range(1000), 3 * self.size)
        chunks = [numbers[i * self.size : (i + 1) * self.size] for i in range(3)]
        return {name: [self.example(n) for n in chunk] for name, chunk in zip(self.splits(), chunks)}

    @staticmethod
    def example(n: int) -> TaskExample:
        return TaskExample(
            messages=[{"role": "user", "content": f"What is {n} plus one?"}],
            reference=n + 1,
            demonstration=f"{n}+1={n + 1}\nAnswer: {n + 1}",
            id=f"add-one:{n}",
        )


class CapitalTask(FileTask):
    """Rows ``{"country", "capital"}`` from any source a FileTask reads, judged by ``answer_text``."""

    default_verifier = "answer_text"

    def example(self, row: dict[str, Any], default_id: str) -> TaskExample:
        return TaskExample(
            messages=[{"role": "user", "content": f"What is the capital of {row['country']}?"}],
            reference=row["capital"],
            demonstration=f"Answer: {row['capital']}",
            id=str(row.get("id", default_id)),
        )


CAPITALS = [("France", "Paris"), ("Peru", "Lima"), ("Chad", "Ndjamena"), ("Cuba", "Havana"), ("Mali", "Bamako")]


def capitals_file(folder: Path) -> Path:
    path = folder / "capitals.jsonl"
    path.write_text("".join(json.dumps({"country": c, "capital": k}) + "\n" for c, k in CAPITALS))
    return path


def test_a_generated_task_is_one_class():
    task = AddOneTask(size=4)
    splits = {name: [e.reference - 1 for e in task.split(name)] for name in task.splits()}
    assert [len(numbers) for numbers in splits.values()] == [4, 4, 4]
    assert len(set().union(*splits.values())) == 12  # no number in two splits
    assert task.split("test") is task.split("test")  # generated once
    with pytest.raises(ValueError, match="AddOneTask has splits"):
        task.split("ood")
    examples = task.split("train")
    assert all(
        v.correct
        for v in task.verifier.verify_batch([e.demonstration for e in examples], [e.reference for e in examples])
    )


def test_a_file_task_is_one_class(tmp_path):
    path = capitals_file(tmp_path)
    task = CapitalTask(train=str(path), test=str(path), limit=4)
    assert task.splits() == ("train", "test") and task.verifier.name == "answer_text"
    examples = task.split("test")
    assert [e.id for e in examples] == ["test:0", "test:1", "test:2", "test:3"]
    assert examples[1].student_messages()[0]["content"].startswith("What is the capital of Peru?\n\n")
    verdicts = task.verifier.verify_batch([e.demonstration for e in examples], [e.reference for e in examples])
    assert all(v.correct for v in verdicts)  # each demonstration answers its row
    assert CapitalTask(test=str(path), verifier="exact").verifier.name == "exact"  # a config may name another


def tiny_config(root: Path, task: dict[str, Any]) -> Path:
    """The quickstart, shrunk to seconds, on ``task``."""
    config = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    config["trainer"] |= {"max_epochs": 1, "default_root_dir": str(root), "enable_progress_bar": False}
    config["trainer"]["log_every_n_steps"] = 1
    model = config["model"]
    model["model"]["tiny"] = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1}
    model["model"]["tiny"]["intermediate_size"] = 64
    model["warm_start"] |= {"steps": 2, "batch_size": 4}
    model["eval_max_new_tokens"] = 8
    config["data"]["task"] = task
    config["data"]["rollout"] |= {"num_samples": 2, "max_new_tokens": 8}
    config["data"] |= {"prompts_per_epoch": 4, "batch_size": 4, "max_eval_prompts": 4}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_a_generated_task_trains_through_the_cli_by_class_path(tmp_path):
    config = tiny_config(tmp_path, {"class_path": "test_task_plugin.AddOneTask", "init_args": {"size": 8}})
    assert main(["fit", "--config", str(config)]) == 0
    (metrics,) = tmp_path.glob("logs/version_*/metrics.csv")
    logged = {key for row in csv.DictReader(metrics.open()) for key, value in row.items() if value}
    assert {"rollout/p_acc", "train/loss", "val/accuracy"} <= logged  # one epoch of rollouts, verified and distilled
    resolved = yaml.safe_load(next(tmp_path.glob("logs/version_*/config.yaml")).read_text())
    assert resolved["data"]["task"]["class_path"] == "test_task_plugin.AddOneTask"


@pytest.mark.slow
def test_a_file_task_is_tested_through_the_cli_by_class_path(tmp_path):
    path = str(capitals_file(tmp_path))
    task = {"class_path": "test_task_plugin.CapitalTask", "init_args": {"train": path, "test": path}}
    config = tiny_config(tmp_path, task)
    assert main(["test", "--config", str(config), "--model.warm_start", "null"]) == 0
    (predictions,) = tmp_path.rglob("test_predictions.jsonl")
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [(r["id"], r["reference"]) for r in records] == [(f"test:{i}", k) for i, (_, k) in enumerate(CAPITALS)]
