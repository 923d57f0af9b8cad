"""Warm start: supervised fine-tuning that gives the tiny embedded model some skill and the overconfident habit.

The paper starts from instruction-tuned models that already solve part of the task and always state high
confidence. A randomly initialised model has neither, so before distillation we fine-tune on the task's golden
demonstrations ending in ``Confidence: 1.00`` (as the paper's golden demonstrations do).

Departure needed by a tiny model: a pretrained LLM follows the teacher template ("Output this exact value...") out of
the box; a model trained from scratch does not. A share of the warm-start examples therefore uses the teacher's
privileged prompts (both templates, with and without the note) holding a stated confidence (1.00 a third of the
time, as golden demonstrations state, else uniform), with the demonstration and that value as the target. This
teaches reading the context only; the plain-prompt examples always end in 1.00, so the student starts
overconfident, as in the paper.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from caopd_pl.tasks.base import TaskExample
from caopd_pl.templates import prompt_ids, revised_completion_ids, teacher_messages


@dataclass(frozen=True)
class WarmStartConfig:
    """Supervised fine-tuning before distillation (the embedded default's stand-in for a pretrained model)."""

    steps: int = 600
    """Optimizer steps."""
    batch_size: int = 64
    """Sequences per step."""
    lr: float = 3e-3
    """Peak learning rate (AdamW, linear warm-up over 5% of the steps, cosine decay)."""
    privileged_fraction: float = 0.4
    """Share of examples that use a teacher prompt with a random stated confidence (see the module docstring)."""
    seed: int = 0
    """Seed of example order and of the random confidences."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"warm_start needs steps >= 0, batch_size >= 1, lr > 0; got {self}")
        if not 0.0 <= self.privileged_fraction <= 1.0:
            raise ValueError(f"warm_start.privileged_fraction must be in [0, 1], got {self.privileged_fraction}")


Pair = tuple[list[int], list[int]]


def warm_start_pairs(
    tokenizer, examples: list[TaskExample], config: WarmStartConfig, count: int
) -> tuple[list[Pair], list[Pair]]:
    """(plain, privileged) lists of (prompt ids, target ids) pairs, ``count`` in all, drawn from ``examples``."""
    rng = random.Random(config.seed)
    usable = [e for e in examples if e.demonstration is not None]
    if not usable:
        raise ValueError("warm_start needs task examples with demonstrations; the train split has none")
    plain: list[Pair] = []
    privileged: list[Pair] = []
    for _ in range(count):
        example = rng.choice(usable)
        messages = example.student_messages()
        if rng.random() < config.privileged_fraction:
            # Golden demonstrations state 1.00 (what the SDFT teacher sees); other values stand for P_acc.
            confidence = 1.0 if rng.random() < 1 / 3 else round(rng.random(), 2)
            template = rng.choice(["demo", "correct_solution"])
            messages = teacher_messages(messages, example.demonstration, confidence, template, note=rng.random() < 0.5)
            target = revised_completion_ids(tokenizer, example.demonstration, confidence)
            privileged.append((prompt_ids(tokenizer, messages), target))
        else:
            plain.append(
                (prompt_ids(tokenizer, messages), revised_completion_ids(tokenizer, example.demonstration, 1.0))
            )
    return plain, privileged


def warm_start_student(
    student: torch.nn.Module,
    tokenizer,
    examples: list[TaskExample],
    config: WarmStartConfig,
    *,
    seed: int | None = None,
    show_progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Warm-start ``student`` on ``examples``' demonstrations: ``config.steps`` steps of :func:`supervised_finetune`.

    Args:
        student: the model, trained in place.
        tokenizer: its tokenizer (prompts and targets are built with the templates).
        examples: the task examples whose demonstrations it learns (rows without one are left out).
        config: steps, batch size, learning rate, privileged share and the seed of the examples' order.
        seed: when given, the global torch seed is set to it just before training (dropout draws from it).
        show_progress: show a progress bar.
        on_step: called with (step, loss) after every step.

    Returns:
        The loss of every step.
    """
    pools = warm_start_pairs(tokenizer, examples, config, count=config.steps * config.batch_size)
    if seed is not None:
        torch.manual_seed(seed)
    return supervised_finetune(student, pools, tokenizer.pad_token_id, config, show_progress, on_step)


def supervised_finetune(
    model: torch.nn.Module,
    pools: tuple[list[Pair], list[Pair]],
    pad_id: int,
    config: WarmStartConfig,
    show_progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Cross-entropy on the target tokens; returns the loss of every step (``on_step(step, loss)`` sees each).

    Each step draws its whole batch from one pool (plain prompts, or the longer privileged ones, with probability
    ``privileged_fraction``), so short sequences are not padded to the length of long ones.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _cosine_with_warmup(step, warmup, config.steps)
    )
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    losses = []
    for step in tqdm(range(config.steps), desc="warm start", unit="step", disable=not show_progress, mininterval=5):
        pool = _pick_pool(pools, config.privileged_fraction, generator)
        picks = torch.randint(len(pool), (config.batch_size,), generator=generator).tolist()
        ids, attention, labels = _pad_sft([pool[i] for i in picks], pad_id)
        # use_cache=False: no KV cache to build in training (and none allowed under gradient checkpointing).
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False).logits  # (B,T,V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten().to(device), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


def _pick_pool(pools: tuple[list[Pair], list[Pair]], privileged_fraction: float, generator) -> list[Pair]:
    plain, privileged = pools
    if not privileged or (plain and torch.rand((), generator=generator).item() >= privileged_fraction):
        return plain
    return privileged


def _cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _pad_sft(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    # Right padding; labels are -100 on the prompt and the padding.
    width = max(len(p) + len(t) for p, t in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(pairs), width), dtype=torch.long)  # (B, T)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)  # (B, T)
    for row, (prompt, target) in enumerate(pairs):
        end = len(prompt) + len(target)
        ids[row, :end] = torch.tensor(prompt + target)
        attention[row, :end] = 1
        labels[row, len(prompt) : end] = torch.tensor(target)
    return ids, attention, labels
