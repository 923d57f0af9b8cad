"""The embedded default model: a small causal LM of a real transformers architecture, random init, built in code.

The same builders make tiny models of the other supported architectures (Llama, Qwen3, OLMo 2) for tests, so the
code path that loads real checkpoints is exercised without downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

Architecture = Literal["qwen2", "llama", "qwen3", "olmo2"]


@dataclass
class TinyModelConfig:
    """Shape of the built-in model (used when ``model.name_or_path`` is ``tiny``)."""

    architecture: Architecture = "qwen2"
    """transformers model family."""
    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads (head dim = hidden_size / num_heads)."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    intermediate_size: int = 384
    """MLP width."""
    max_positions: int = 512
    """Longest sequence."""
    seed: int = 0
    """Seed of the random initialisation."""
    tie_word_embeddings: bool = True
    """Share the input embedding with the output layer (Qwen3-0.6B/1.7B/4B do, Qwen3-8B and larger do not)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.tiny.hidden_size ({self.hidden_size}) must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"model.tiny.num_heads ({self.num_heads}) must be divisible by num_kv_heads")


def tiny_config(spec: TinyModelConfig, vocab_size: int, pad_token_id: int, eos_token_id: int) -> PretrainedConfig:
    """A transformers config of ``spec``'s architecture."""
    return AutoConfig.for_model(
        spec.architecture,
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.hidden_size // spec.num_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=spec.tie_word_embeddings,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        rope_theta=10_000.0,
    )


def build_tiny_model(spec: TinyModelConfig, vocab_size: int, pad_token_id: int, eos_token_id: int) -> PreTrainedModel:
    """A randomly initialised causal LM, deterministic in ``spec.seed``."""
    config = tiny_config(spec, vocab_size, pad_token_id, eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.eos_token_id = eos_token_id
    return model
