"""Rollouts with Hugging Face ``generate``: samples straight from the student, so there is nothing to sync."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[list[int]],
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 256,
) -> list[list[Rollout]]:
    """``num_samples`` completions per prompt (greedy when ``temperature`` is 0), in prompt order.

    Prompts are left-padded in batches of about ``batch_size`` sequences; sampling is seeded and does not disturb
    the global random state.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_batch = max(1, batch_size // num_samples)
    results: list[list[Rollout]] = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), per_batch):
                batch = prompts[start : start + per_batch]
                results += _generate_batch(model, tokenizer, batch, num_samples, temperature, top_p, max_new_tokens)
    finally:
        model.train(was_training)
    return results


def _generate_batch(model, tokenizer, prompts, num_samples, temperature, top_p, max_new_tokens) -> list[list[Rollout]]:
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, P)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, P)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        top_k=None,
        **sampling,
    )  # (B * K, P + new)
    rollouts = [_to_rollout(tokenizer, row.tolist()) for row in output[:, width:].cpu()]
    return [rollouts[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def _to_rollout(tokenizer, ids: list[int]) -> Rollout:
    eos = tokenizer.eos_token_id
    finished = eos in ids
    # Rows that stop early are padded after their EOS; a row cut at max_new_tokens has no padding at all, so every
    # one of its tokens is real (even one equal to the pad id).
    ids = ids[: ids.index(eos) + 1] if finished else ids
    return Rollout(ids, tokenizer.decode(ids, skip_special_tokens=True), finished)


class HFEngine(RolloutEngine):
    """Samples with ``model.generate`` on the training model itself."""

    def __init__(self, model: torch.nn.Module, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    def sync(self, model: torch.nn.Module) -> None:
        self.model = model  # the same weights: nothing to copy

    def generate(self, prompts: Sequence[list[int]], config: RolloutConfig, seed: int) -> list[list[Rollout]]:
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            num_samples=config.num_samples,
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens,
            seed=seed,
            batch_size=config.batch_size,
        )
