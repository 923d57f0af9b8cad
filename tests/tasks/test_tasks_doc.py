"""docs/tasks.md's example runs as written: its JSONL rows and its config (a local checkpoint + a JSONL task),
shrunk to seconds, through the real entry point."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from caopd_pl.__main__ import main
from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.tasks.jsonl import JsonlTask

DOC = Path(__file__).resolve().parents[2] / "docs" / "tasks.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_documented_rows_load_with_their_demonstrations(tmp_path):
    (rows,) = _blocks("json")
    path = tmp_path / "train.jsonl"
    path.write_text(rows)
    examples = JsonlTask(verifier="math", train=str(path)).split("train")
    assert [e.id for e in examples] == ["p1", "p2"] and all(e.demonstration for e in examples)
    verdicts = JsonlTask(verifier="math", train=str(path)).verifier.verify_batch(
        [e.demonstration for e in examples], [e.reference for e in examples]
    )
    assert all(v.correct for v in verdicts)  # each demonstration is a right answer to its row


@pytest.mark.slow
def test_the_documented_config_trains_a_local_model_on_the_jsonl_task(tmp_path, tokenizer):
    (rows,) = _blocks("json")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.jsonl").write_text(rows)
    spec = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model = build_tiny_model(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")

    config = yaml.safe_load(_blocks("yaml")[0])
    config["trainer"] |= {
        "accelerator": "cpu",
        "max_epochs": 1,
        "accumulate_grad_batches": 1,
        "default_root_dir": str(tmp_path / "run"),
        "enable_progress_bar": False,
    }
    config["model"]["model"] |= {"name_or_path": str(tmp_path / "model"), "dtype": "float32"}
    config["model"]["eval_max_new_tokens"] = 8
    config["data"]["task"]["init_args"] |= {
        split: str(tmp_path / f"{split}.jsonl") for split in ("train", "val", "test")
    }
    config["data"]["rollout"] |= {"num_samples": 2, "max_new_tokens": 8}
    config["data"] |= {"prompts_per_epoch": 2, "batch_size": 4}
    path = tmp_path / "my_run.yaml"
    path.write_text(yaml.safe_dump(config))

    assert main(["fit", "--config", str(path)]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.exists()  # where the doc's `test` command looks for it
    assert main(["test", "--config", str(path), "--ckpt_path", str(checkpoint)]) == 0
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "run").rglob("metrics.json")]
    assert metrics and metrics[0]["n"] == 2
