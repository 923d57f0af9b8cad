"""Rollouts with Hugging Face ``generate``: samples straight from the student, so there is nothing to sync.

``generate`` merges the call's settings with the model's own ``generation_config`` (every field the call leaves
unset is taken from it), so an instruct checkpoint's ``repetition_penalty``, ``top_k``, ``min_p``, ``suppress_tokens``
... would silently reshape the rollouts. Here the call gets a complete :class:`~transformers.GenerationConfig` built
from :class:`~caopd_pl.rollout.base.RolloutConfig` alone, and the model's is swapped for that same config for the
duration of the call, so nothing is inherited (the student's own ``generation_config`` is restored afterwards).

Each chunk of prompts (:meth:`~caopd_pl.rollout.base.RolloutEngine.generate` chunks them) is one left-padded
``generate`` call, seeded with the chunk's seed under a forked random state: the global random state is untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine


def sampling_config(
    num_samples: int, temperature: float, top_p: float, max_new_tokens: int, stop_ids: Sequence[int], pad_id: int
) -> GenerationConfig:
    """The whole generation config of a rollout call: greedy when ``temperature`` is 0, else plain sampling.

    ``top_k=0`` is explicit because transformers' global default is 50; every other processor (penalties, min-p,
    typical-p, suppressed tokens ...) is off at the global defaults.
    """
    if temperature > 0:
        sampling: dict[str, Any] = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        sampling = dict(do_sample=False)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples,
        num_beams=1,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        **sampling,
    )


class HFEngine(RolloutEngine):
    """Samples with ``model.generate`` on the training model itself, in eval mode (no dropout).

    The model gets its mode back after each chunk. Greedy decoding (temperature 0) decodes each prompt once and
    returns K copies of its completion.
    """

    name = "hf"

    @torch.no_grad()
    def generate_chunk(self, prompts: list[list[int]], sampling: RolloutConfig, seed: int) -> list[list[Rollout]]:
        copies = sampling.num_samples if sampling.temperature == 0 else 1  # greedy: the K completions are one
        config = sampling_config(
            sampling.num_samples // copies,
            sampling.temperature,
            sampling.top_p,
            sampling.max_new_tokens,
            self.stop_ids,
            self.tokenizer.pad_token_id,
        )
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            with (
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
                _generation_config_replaced(model, config),
            ):
                torch.manual_seed(seed)
                groups = _generate_batch(model, self.tokenizer, prompts, config, self.stop_ids)
        finally:
            model.train(was_training)
        return [group * copies for group in groups]


@contextlib.contextmanager
def _generation_config_replaced(model: torch.nn.Module, config: GenerationConfig) -> Iterator[None]:
    """``model.generation_config`` is ``config`` inside: generate() then has nothing of the checkpoint's to merge."""
    original = getattr(model, "generation_config", None)
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = original


def _generate_batch(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[list[int]], config: GenerationConfig, stop_ids: list[int]
) -> list[list[Rollout]]:
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, P)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, P)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    output = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
    )  # (B * K, P + new)
    rollouts = [Rollout.from_ids(row.tolist(), tokenizer, stop_ids) for row in output[:, width:].cpu()]
    k = config.num_return_sequences
    return [rollouts[i * k : (i + 1) * k] for i in range(len(prompts))]
