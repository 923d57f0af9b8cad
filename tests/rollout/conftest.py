"""A checkpoint whose generation config would reshape the rollouts, saved to disk and loaded as a user's would be.

Its ``generation_config.json`` holds an instruct model's sampling defaults (``repetition_penalty=1.5``, ``top_k=3``,
``temperature=0.1``, ``do_sample=True``) and two EOS ids, as Qwen's do (``<|im_end|>`` and ``<|endoftext|>``). The
second EOS id is a token the student's plain greedy path emits a few tokens in, so a decoder that honours it stops
there and one that ignores it runs on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from caopd_pl.models.loading import ModelConfig, load_model
from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model

# Hidden 64 with 2 heads: vLLM's CPU attention needs a head size of at least 32.
CHECKPOINT_SPEC = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
PROMPTS = ["12+3=", "hello world", "What is 7*8?", "a", "Confidence:", "The answer is 42.\n"]
HOSTILE_SAMPLING = dict(do_sample=True, temperature=0.1, top_k=3, repetition_penalty=1.5)


@dataclass
class Checkpoint:
    """A saved checkpoint with a hostile generation config."""

    path: Path
    eos_ids: list[int]
    """The tokenizer's EOS, then the second EOS id of the generation config."""


@torch.no_grad()
def argmax_decode(model: torch.nn.Module, prompt: list[int], stop_ids: list[int], max_new_tokens: int) -> list[int]:
    """Plain greedy decoding, one full forward per token, no cache, no processors: the reference."""
    ids = list(prompt)
    for _ in range(max_new_tokens):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))  # argmax of (V,)
        if ids[-1] in stop_ids:
            break
    return ids[len(prompt) :]


@pytest.fixture(scope="session")
def hostile_checkpoint(tmp_path_factory, tokenizer) -> Checkpoint:
    model = build_tiny_model(CHECKPOINT_SPEC, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights large enough that greedy paths are long and depend on the prompt
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    plain = argmax_decode(model, tokenizer(PROMPTS[0])["input_ids"], [tokenizer.eos_token_id], 24)
    second = next(t for i, t in enumerate(plain) if i >= 3 and t not in plain[:i] and t != tokenizer.eos_token_id)
    eos_ids = [tokenizer.eos_token_id, second]
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id, **HOSTILE_SAMPLING
    )
    path = tmp_path_factory.mktemp("hostile_checkpoint")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Checkpoint(path, eos_ids)


@pytest.fixture
def hostile_student(hostile_checkpoint, tokenizer) -> torch.nn.Module:
    """The checkpoint loaded the way the CLI loads ``model.model.name_or_path``."""
    model, loaded_tokenizer = load_model(ModelConfig(name_or_path=str(hostile_checkpoint.path)))
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert model.generation_config.repetition_penalty == 1.5  # the hostile defaults did load
    assert model.generation_config.eos_token_id == hostile_checkpoint.eos_ids
    return model


@pytest.fixture(scope="session")
def prompt_ids(tokenizer) -> list[list[int]]:
    """Prompts of different lengths (the engines left-pad them into one batch)."""
    return [tokenizer(text)["input_ids"] for text in PROMPTS]


@pytest.fixture(scope="session")
def reference_decode():
    """:func:`argmax_decode`, the reference greedy decoder."""
    return argmax_decode
