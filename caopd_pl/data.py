"""Distillation examples and their batches: pure torch, no Lightning.

A :class:`DistillExample` (made by :mod:`caopd_pl.revision`, which needs no torch) holds one revised completion
twice: after the student's plain prompt and after the teacher's privileged prompt. :func:`collate_distill`
right-pads both and marks, in each, the positions whose next token is a completion token, so the two masks select
the same tokens in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from caopd_pl.revision import DistillExample

__all__ = ["DistillExample", "PromptBatch", "collate_distill", "collate_prompts", "skip_first"]


def collate_distill(examples: list[DistillExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of examples into a batch.

    Returns:
        ``student_ids``/``teacher_ids`` (B, T*) long, ``student_attention``/``teacher_attention`` (B, T*) long, and
        ``student_mask``/``teacher_mask`` (B, T*) bool: True at positions predicting a completion token.
    """
    batch: dict[str, torch.Tensor] = {}
    for side in ("student", "teacher"):
        prompts = [getattr(e, f"{side}_prompt") for e in examples]
        width = max(len(p) + len(e.completion) for p, e in zip(prompts, examples))
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
        attention = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(examples), width), dtype=torch.bool)  # (B, T)
        for row, (prompt, example) in enumerate(zip(prompts, examples)):
            sequence = prompt + example.completion
            ids[row, : len(sequence)] = torch.tensor(sequence)
            attention[row, : len(sequence)] = 1
            mask[row, len(prompt) - 1 : len(sequence) - 1] = True  # hidden at t predicts token t + 1
        batch |= {f"{side}_ids": ids, f"{side}_attention": attention, f"{side}_mask": mask}
    return batch


def skip_first(mask: torch.Tensor, count: int) -> torch.Tensor:
    """``mask`` (B, T) without the first ``count`` True positions of each row."""
    return mask & (mask.cumsum(dim=-1) > count)


@dataclass
class PromptBatch:
    """Evaluation prompts: token ids and the task examples they came from."""

    prompt_ids: list[list[int]]
    examples: list


def collate_prompts(items: list[tuple[list[int], object]]) -> PromptBatch:
    """Group (prompt ids, task example) pairs into a :class:`PromptBatch`, in order."""
    return PromptBatch([ids for ids, _ in items], [example for _, example in items])
