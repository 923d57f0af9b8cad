"""Exponential moving average of the student's weights: the CaOPD teacher.

After every optimizer step, ``teacher <- (1 - rate) * teacher + rate * student`` (rate 0.01 in the reference code).
A rate of 0 freezes the teacher at the initial student; a rate of 1 makes it a copy of the current student.
"""

from __future__ import annotations

import copy

import torch


def make_teacher(student: torch.nn.Module) -> torch.nn.Module:
    """A frozen, eval-mode deep copy of ``student``."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, rate: float) -> None:
    """Move every floating-point parameter and buffer of ``teacher`` towards ``student`` by ``rate``.

    Raises:
        ValueError: if ``rate`` is outside [0, 1] or the two modules' parameters do not line up.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"ema_rate must be in [0, 1], got {rate}")
    teacher_tensors = _float_tensors(teacher)
    student_tensors = _float_tensors(student)
    if len(teacher_tensors) != len(student_tensors):
        raise ValueError(f"teacher has {len(teacher_tensors)} float tensors, student {len(student_tensors)}")
    if rate == 0.0 or not teacher_tensors:
        return
    torch._foreach_lerp_(teacher_tensors, student_tensors, rate)


def _float_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    # remove_duplicate=True (the default) visits a tied weight once, in both models alike.
    params = [p.data for p in module.parameters() if p.is_floating_point()]
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    return params + buffers
