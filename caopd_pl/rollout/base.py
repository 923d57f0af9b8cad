"""The rollout engine interface: K sampled completions per prompt from the current student.

An engine is created once per run by :func:`caopd_pl.rollout.make_engine`. Before each epoch's rollouts the
DataModule calls :meth:`RolloutEngine.sync` with the student; an engine that samples from a separate copy of the
weights (vLLM) pushes them there, one that samples from the student itself (Hugging Face) has nothing to do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class RolloutConfig:
    """How on-policy rollouts are sampled."""

    engine: Literal["hf", "vllm", "auto"] = "hf"
    """Sampler: Hugging Face ``generate``, vLLM, or vLLM when installed and a GPU is present."""
    num_samples: int = 8
    """K, completions sampled per prompt; P_acc is the share of them the verifier accepts."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    max_new_tokens: int = 64
    """Longest completion, in tokens."""
    seed: int = 0
    """Base seed; epoch e samples with seed + e, so a resumed run draws the same rollouts."""
    batch_size: int = 256
    """Sequences per generate call of the Hugging Face engine (prompts x K)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """vLLM: weight dtype of the engine."""
    gpu_memory_utilization: float = 0.3
    """vLLM: share of GPU memory the colocated engine may take."""
    tensor_parallel_size: int = 1
    """vLLM: tensor-parallel degree of the engine."""
    max_model_len: int | None = None
    """vLLM: longest prompt + completion; None takes the model's own limit."""
    enable_sleep_mode: bool = False
    """vLLM on GPU: sleep while training so the trainer gets the memory back."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"rollout.num_samples must be >= 1, got {self.num_samples}")
        if self.temperature < 0:
            raise ValueError(f"rollout.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"rollout.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"rollout.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Rollout:
    """One sampled completion."""

    token_ids: list[int]
    """Completion tokens, without the prompt, without padding, including the EOS token if one was sampled."""
    text: str
    """The completion decoded without special tokens."""
    finished: bool
    """Whether sampling stopped at EOS (False: cut at max_new_tokens)."""


class RolloutEngine(ABC):
    """Samples K completions per prompt."""

    @abstractmethod
    def sync(self, model: torch.nn.Module) -> None:
        """Make the engine sample from ``model``'s current weights."""

    @abstractmethod
    def generate(self, prompts: Sequence[list[int]], config: RolloutConfig, seed: int) -> list[list[Rollout]]:
        """``config.num_samples`` rollouts for each tokenised prompt, in prompt order."""

    def close(self) -> None:
        """Release the engine's memory and processes."""
