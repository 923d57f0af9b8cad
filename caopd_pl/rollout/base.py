"""The rollout engine interface: K sampled completions per prompt from the current student.

An engine is created once per run by :func:`caopd_pl.rollout.make_engine`. Before each epoch's rollouts, and before
each evaluation batch, the DataModule calls :meth:`RolloutEngine.sync` with the student; an engine that samples from a
separate copy of the weights (vLLM) pushes them there, one that samples from the student itself (Hugging Face) has
nothing to do.

Rollouts are samples of the student and nothing else: both engines sample with exactly what :class:`RolloutConfig`
says (temperature, top-p, length) and ignore the sampling defaults a checkpoint ships in its ``generation_config``
(``repetition_penalty``, ``top_k``, ``min_p`` ... of instruct models), which would make P_acc an estimate for another
policy than the one distilled. Both stop on the same ids, :func:`stop_token_ids`, and cut a completion at the first
of them (:meth:`Rollout.from_ids`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch


@dataclass
class RolloutConfig:
    """How on-policy rollouts are sampled."""

    engine: Literal["hf", "vllm", "auto"] = "hf"
    """Sampler: Hugging Face ``generate``, vLLM, or vLLM when installed and a GPU is present."""
    num_samples: int = 8
    """K, completions sampled per prompt; P_acc is the share of them the verifier accepts."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy. With ``top_p`` the only sampling setting (no top-k, no penalties)."""
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
    """Completion tokens, without the prompt, without padding, ending with the stop id if one was sampled."""
    text: str
    """The completion decoded without special tokens."""
    finished: bool
    """Whether sampling stopped at a stop id (False: cut at max_new_tokens)."""

    @classmethod
    def from_ids(cls, ids: Sequence[int], tokenizer: Any, stop_ids: Sequence[int]) -> Rollout:
        """A completion from its generated ids, cut after the first stop id (whatever follows it is padding).

        A completion that never samples a stop id was cut at ``max_new_tokens`` and has no padding: every one of its
        tokens is real, even one equal to the pad id.
        """
        ids = list(ids)
        stop = next((i for i, token in enumerate(ids) if token in stop_ids), None)
        ids = ids if stop is None else ids[: stop + 1]
        return cls(ids, tokenizer.decode(ids, skip_special_tokens=True), finished=stop is not None)


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """The ids that end a completion, in both engines: the tokenizer's EOS, then the checkpoint's EOS ids.

    The checkpoint's ``generation_config.eos_token_id`` (an id or a list) counts because instruct checkpoints end a
    turn with more than one token: Qwen2.5/Qwen3-Instruct stop on ``<|im_end|>`` (their tokenizer's EOS) and on
    ``<|endoftext|>`` (added by their generation config). vLLM always stops on both; Hugging Face ``generate`` given
    only the tokenizer's EOS would run on past ``<|endoftext|>``. Only the EOS ids are taken from the generation
    config, none of its sampling settings.

    Args:
        tokenizer: The student's tokenizer; must define ``eos_token_id``.
        generation_config: The checkpoint's ``transformers.GenerationConfig`` (``model.generation_config``), or None.

    Returns:
        Distinct ids, the tokenizer's EOS first.
    """
    extra = getattr(generation_config, "eos_token_id", None)
    extra = [] if extra is None else [extra] if isinstance(extra, int) else list(extra)
    return list(dict.fromkeys([tokenizer.eos_token_id, *extra]))


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
