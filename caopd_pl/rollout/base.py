"""The rollout engine interface: K sampled completions per prompt from the current student, and the registry.

An engine is one subclass of :class:`RolloutEngine` with a ``name``: defining it registers it in :data:`ENGINES`,
and ``data.rollout.engine: <name>`` selects it (:func:`caopd_pl.rollout.make_engine`; its class path selects it
without a name or an import, :mod:`caopd_pl.registry`); nothing else is edited. The
subclass writes one method, :meth:`RolloutEngine.generate_chunk` (a seeded chunk of prompts); the base class owns the
settings (:class:`RolloutConfig`, given once, at construction), the stop ids, the chunking and its seeds, and the
progress bar. An engine that samples from its own copy of the weights (vLLM) also overrides :meth:`~RolloutEngine.sync`
and :meth:`~RolloutEngine.close`; :mod:`caopd_pl.rollout.weights` gathers the weights and tells when they changed.

An engine is created once per run. Before each epoch's rollouts, and before each evaluation batch, the DataModule
calls :meth:`RolloutEngine.sync` with the student; an engine that samples from the student itself (Hugging Face)
has nothing to do.

Rollouts are samples of the student and nothing else: every engine samples with exactly what :class:`RolloutConfig`
says (temperature, top-p, length) and ignores the sampling defaults a checkpoint ships in its ``generation_config``
(``repetition_penalty``, ``top_k``, ``min_p`` ... of instruct models), which would make P_acc an estimate for another
policy than the one distilled. All stop on the same ids, :func:`stop_token_ids`, and cut a completion at the first
of them (:meth:`Rollout.from_ids`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from tqdm.auto import tqdm

from caopd_pl.registry import Registry

AUTO = "auto"
"""``data.rollout.engine: auto``: vLLM when it is installed and a GPU is present, else Hugging Face."""


@dataclass
class RolloutConfig:
    """How on-policy rollouts are sampled."""

    engine: str = "hf"
    """Sampler: ``hf`` (Hugging Face ``generate``), ``vllm``, the ``name`` or class path of any other
    ``RolloutEngine`` subclass, or ``auto`` (vLLM when installed and a GPU is present, else ``hf``)."""
    num_samples: int = 8
    """K, completions sampled per prompt; P_acc is the share of them the verifier accepts."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy. With ``top_p`` the only sampling setting (no top-k, no penalties)."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    max_new_tokens: int = 64
    """Longest completion, in tokens."""
    seed: int = 0
    """Base seed: epoch e on rank r samples with seed + 10,007 e + 101 r, evaluation batch b with seed + b (each
    chunk of a call adds the index of its first prompt), so a resumed run draws the same rollouts."""
    batch_size: int = 256
    """Sequences (prompts x K) per engine call: prompts are sampled in chunks of max(1, batch_size // K)."""
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
        check_engine_name(self.engine)
        if self.num_samples < 1:
            raise ValueError(f"rollout.num_samples must be >= 1, got {self.num_samples}")
        if self.temperature < 0:
            raise ValueError(f"rollout.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"rollout.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"rollout.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"rollout.batch_size must be >= 1, got {self.batch_size}")


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


# --------------------------------------------------------------------------------------------------------------
# The engine interface and its registry
# --------------------------------------------------------------------------------------------------------------


def check_engine_name(name: str) -> None:
    """Raise unless ``name`` names a rollout engine (a registered name, a class path, an entry point) or is ``auto``.

    Raises:
        ValueError: one line naming ``data.rollout.engine``, the value and the names it can take.
    """
    if name != AUTO:
        ENGINES.resolve(name)


class RolloutEngine(ABC):
    """Samples K completions per prompt from a model, a chunk of prompts at a time.

    A subclass sets ``name`` (which registers it) and implements :meth:`generate_chunk`; one that keeps its own copy
    of the weights overrides :meth:`sync` and :meth:`close` too.

    Args:
        config: The run's rollout settings (``data.rollout``); the default sampling of :meth:`generate`, and the
            chunk size (``batch_size``).
        model: The student; the engine samples from it (or from a copy pushed by :meth:`sync`). Its
            ``generation_config`` contributes its EOS ids to the stop ids, nothing else.
        tokenizer: The student's tokenizer, which decodes the completions.
    """

    name: ClassVar[str]
    """The value of ``data.rollout.engine`` that selects this engine."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ENGINES.add_own_name(cls)  # a name set on this class, not inherited: a subclass is not registered twice

    def __init__(self, config: RolloutConfig, model: torch.nn.Module, tokenizer: Any) -> None:
        self.config, self.model, self.tokenizer = config, model, tokenizer
        self.stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))

    def generate(
        self,
        prompts: Sequence[list[int]],
        *,
        seed: int,
        sampling: RolloutConfig | None = None,
        progress: bool = False,
    ) -> list[list[Rollout]]:
        """``sampling.num_samples`` rollouts for each tokenised prompt, in prompt order.

        Prompts are sampled in chunks of ``max(1, config.batch_size // sampling.num_samples)``; the chunk that starts
        at prompt ``i`` is seeded with ``seed + i``, so a call with at most one chunk of prompts is seeded with
        ``seed`` itself.

        Args:
            prompts: Token ids of each prompt, unpadded.
            seed: The seed of the first chunk.
            sampling: ``num_samples``, ``temperature``, ``top_p`` and ``max_new_tokens`` of this call (evaluation
                decodes with its own); None: the engine's ``config``. Its other fields are not read.
            progress: Show a "rollouts" progress bar, counting prompts.

        Returns:
            One list of ``sampling.num_samples`` rollouts per prompt.
        """
        sampling = self.config if sampling is None else sampling
        per_call = max(1, self.config.batch_size // sampling.num_samples)
        rollouts: list[list[Rollout]] = []
        with tqdm(total=len(prompts), desc="rollouts", unit="prompt", disable=not progress) as bar:
            for start in range(0, len(prompts), per_call):
                chunk = list(prompts[start : start + per_call])
                rollouts += self._checked(chunk, sampling, self.generate_chunk(chunk, sampling, seed + start))
                bar.update(len(chunk))
        return rollouts

    def _checked(
        self, chunk: list[list[int]], sampling: RolloutConfig, groups: list[list[Rollout]]
    ) -> list[list[Rollout]]:
        """``groups`` if it is one group of K rollouts per prompt; a subclass that returns less is a bug."""
        sizes = [len(group) for group in groups]
        if sizes != [sampling.num_samples] * len(chunk):
            raise RuntimeError(
                f"{type(self).__qualname__}.generate_chunk returned groups of sizes {sizes} for {len(chunk)} prompts; "
                f"it must return {sampling.num_samples} rollouts per prompt, in prompt order"
            )
        return groups

    @abstractmethod
    def generate_chunk(self, prompts: list[list[int]], sampling: RolloutConfig, seed: int) -> list[list[Rollout]]:
        """``sampling.num_samples`` rollouts for each of at most ``config.batch_size // num_samples`` prompts.

        Args:
            prompts: Token ids of each prompt, unpadded.
            sampling: The call's sampling settings (``num_samples``, ``temperature`` (0: greedy), ``top_p``,
                ``max_new_tokens``); stop on :attr:`stop_ids`.
            seed: The chunk's seed: the same seed and prompts must give the same rollouts, and the global random
                state must be left as it was.

        Returns:
            One list of ``sampling.num_samples`` rollouts per prompt, in prompt order (:meth:`Rollout.from_ids`).
        """

    def sync(self, model: torch.nn.Module) -> None:
        """Make the engine sample from ``model``'s current weights (here: from ``model`` itself, nothing to copy)."""
        self.model = model

    def close(self) -> None:
        """Release the engine's memory and processes (here: nothing held)."""


ENGINES: Registry[RolloutEngine] = Registry(
    RolloutEngine,
    "data.rollout.engine",
    "rollout engine",
    modules=("caopd_pl.rollout",),
    group="caopd_pl.rollout_engines",
    reserved=(AUTO,),
)
"""Every engine that sets a ``name``, by that name (``hf``, ``vllm``); a class path or an entry point of the
``caopd_pl.rollout_engines`` group names any other."""
