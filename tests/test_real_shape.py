"""The real-shape dress rehearsal (``benchmarks/real_shape.py``), smaller, through the CLI: fit, test, export.

The model is a random-weight Qwen3 with Qwen3's full vocabulary (151,936) and the BPE tokenizer built in code, at a
tiny width and with short prompts and completions, so the path a Qwen3 checkpoint takes (byte-level BPE, reserved
ids, two stop ids, untied output layer, gradient checkpointing, the paper config) runs in about a minute. A second
run holds the student in bf16 weights (``bf16-true``) at a small vocabulary. Each asserts on what every stage wrote.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "real_shape.py"
_SPEC = importlib.util.spec_from_file_location("real_shape", _PATH)
real_shape = importlib.util.module_from_spec(_SPEC)
sys.modules["real_shape"] = real_shape  # dataclasses look their module up while the file executes
_SPEC.loader.exec_module(real_shape)

SMALL = real_shape.Shape(
    hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, prompt_tokens=96,
    completion_tokens=48,
)  # fmt: skip


def _assert_fit_test_export(report: dict, out: Path, shape, run) -> None:
    examples = run.prompts * run.samples
    fit = report["fit"]
    assert (out / "checkpoints" / "last.ckpt").is_file() and len(fit["losses"]) == examples // run.batch_size
    assert all(loss >= 0 for loss in fit["losses"])  # a KL divergence
    assert fit["rollout/examples"] == examples
    # Random weights seldom sample one of the two stop ids, so most rollouts run to the length limit, and a revised
    # completion keeps about its sampled length (reserved tokens round-trip), less the 3 skipped tokens.
    assert fit["completion_tokens"] >= examples * (shape.completion_tokens - 3) * 0.7
    metrics = report["test"]["metrics"]
    assert metrics["n"] == run.prompts and 0.0 <= metrics["accuracy"] <= 1.0
    assert all(chars > 0 for chars in report["test"]["completion_chars"])
    export = out / "export"
    assert {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"} <= set(
        report["export"]["files"]
    )
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["vocab_size"] == shape.vocab_size
    assert config["tie_word_embeddings"] is False
    assert len(report["export"]["greedy_ids"]) == real_shape.GREEDY_TOKENS


@pytest.mark.slow
def test_full_vocabulary_fit_test_export_through_the_cli(tmp_path):
    checkpoint = real_shape.write_checkpoint(SMALL, tmp_path / "checkpoint")
    run = real_shape.Run("tooluse")
    report = real_shape.rehearse(run, SMALL, checkpoint, tmp_path / "tooluse")
    _assert_fit_test_export(report, tmp_path / "tooluse", SMALL, run)
    # The exported student is the trained one, not the base checkpoint: fit moved its weights.
    with (
        safe_open(checkpoint / "model.safetensors", "pt") as base,
        safe_open(tmp_path / "tooluse" / "export" / "model.safetensors", "pt") as trained,
    ):
        name = "model.layers.0.mlp.down_proj.weight"
        assert not torch.equal(base.get_tensor(name), trained.get_tensor(name))


@pytest.mark.slow
def test_bf16_weights_fit_test_export_through_the_cli(tmp_path):
    shape = dataclasses.replace(SMALL, vocab_size=4_096, bpe_size=2_000)
    checkpoint = real_shape.write_checkpoint(shape, tmp_path / "checkpoint", dtype="bfloat16")
    run = real_shape.Run("tooluse", dtype="bfloat16", precision="bf16-true")
    report = real_shape.rehearse(run, shape, checkpoint, tmp_path / "tooluse")
    _assert_fit_test_export(report, tmp_path / "tooluse", shape, run)
    assert report["export"]["dtype"] == "torch.bfloat16"
