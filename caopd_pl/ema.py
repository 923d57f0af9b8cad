"""Exponential moving average of the student's weights: the CaOPD teacher.

After every optimizer step, ``teacher <- (1 - rate) * teacher + rate * student`` (rate 0.01 in the reference code).
A rate of 0 freezes the teacher at the initial student; a rate of 1 makes it a copy of the current student.

Teacher and student may hold different dtypes (an fp32 teacher beside a bf16 student, or a bf16 teacher beside an
fp32 student). A low-precision teacher (bf16/fp16) is updated in float32 and rounded back *stochastically*. With
round-to-nearest, an update ``rate * (student - teacher)`` smaller than half a bf16 step (2^-9 of the value) is lost,
and at rate 0.01 with fine-tuning's small per-step changes that is nearly every update, so a bf16 teacher (the
reference code's setting) lags far behind the EMA it should be; stochastic rounding leaves zero-mean noise of a few
bf16 steps per weight instead (docs/method.md has the measurement; ``tests/test_ema.py`` checks a smaller case).
"""

from __future__ import annotations

import copy

import torch
from torch.distributed.tensor import DTensor

LOW_PRECISION = (torch.bfloat16, torch.float16)


def make_teacher(student: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A frozen, eval-mode deep copy of ``student``, cast to ``dtype`` when given."""
    teacher = copy.deepcopy(student)
    if dtype is not None:
        teacher.to(dtype=dtype)
    teacher.requires_grad_(False)
    return teacher.eval()


def reset_teacher(teacher: torch.nn.Module, student: torch.nn.Module) -> None:
    """teacher <- student exactly (after the warm start): the full copy's state dict, or the teacher adapter."""
    if hasattr(teacher, "copy_student"):
        teacher.copy_student()
    else:
        teacher.load_state_dict(student.state_dict())


@torch.no_grad()
def ema_update(
    teacher: torch.nn.Module, student: torch.nn.Module, rate: float, generator: torch.Generator | None = None
) -> None:
    """Move every floating-point parameter and buffer of ``teacher`` towards ``student`` by ``rate``.

    Args:
        teacher: the EMA model, updated in place; or a teacher that names its own tensors with ``ema_pairs()``
            (``(teacher tensors, student tensors)``, as :class:`caopd_pl.models.lora.AdapterTeacher` does for the
            LoRA teacher adapter), whose tensors alone move.
        student: the trained model; its tensors may have another floating dtype than the teacher's.
        rate: the EMA rate, in [0, 1].
        generator: random source of the stochastic rounding of low-precision teacher parameters (on their device);
            None uses torch's global generator.

    Raises:
        ValueError: if ``rate`` is outside [0, 1] or the two modules' parameters do not line up.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"ema_rate must be in [0, 1], got {rate}")
    if hasattr(teacher, "ema_pairs"):  # a teacher adapter over the student's base: only adapter tensors move
        teacher_params, student_params = teacher.ema_pairs()
        _update(teacher_params, student_params, rate, generator, stochastic=True)
        return
    teacher_params, teacher_buffers = _float_tensors(teacher)
    student_params, student_buffers = _float_tensors(student)
    if len(teacher_params) != len(student_params) or len(teacher_buffers) != len(student_buffers):
        raise ValueError(
            f"teacher has {len(teacher_params)} float parameters and {len(teacher_buffers)} float buffers, "
            f"student {len(student_params)} and {len(student_buffers)}"
        )
    if rate == 0.0:
        return
    _update(teacher_params, student_params, rate, generator, stochastic=True)
    # Buffers (rotary frequencies) are not trained: nearest rounding keeps a bf16 copy of a constant one constant.
    _update(teacher_buffers, student_buffers, rate, generator, stochastic=False)


def _update(
    teachers: list[torch.Tensor],
    students: list[torch.Tensor],
    rate: float,
    generator: torch.Generator | None,
    stochastic: bool,
) -> None:
    fused = [(t, s) for t, s in zip(teachers, students) if t.dtype == s.dtype and t.dtype not in LOW_PRECISION]
    if fused:  # one kernel for the common case
        torch._foreach_lerp_([t for t, _ in fused], [s for _, s in fused], rate)
    for t, s in zip(teachers, students):
        if t.dtype in LOW_PRECISION:
            # Sharded (FSDP2 DTensors, teacher and student sharded alike): the rounding's noise is a plain tensor,
            # so the update runs on each rank's local shards, in place.
            t, s = _local(t), _local(s)
            mixed = t.float().lerp_(s.float(), rate)  # float32, so a small update survives until the rounding
            t.copy_(stochastic_round(mixed, t.dtype, generator) if stochastic and rate < 1.0 else mixed)
        elif t.dtype != s.dtype:  # one tensor at a time: a cast copy of the whole student could be gigabytes
            t.lerp_(s.to(t.dtype), rate)


def stochastic_round(
    values: torch.Tensor, dtype: torch.dtype, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Round float32 ``values`` to ``dtype`` up or down at random, so that the expected result is ``values``.

    bfloat16 is the upper half of a float32: adding a uniform random integer in [0, 2^16) to the float32 bit pattern
    and dropping the lower 16 bits rounds up with probability equal to the dropped fraction. float16 has no such
    bit relation; it is rounded by comparing a uniform draw with the distance to the two neighbours.
    """
    if dtype == torch.bfloat16:
        bits = values.contiguous().view(torch.int32)
        noise = torch.randint(0, 1 << 16, bits.shape, generator=generator, device=bits.device, dtype=torch.int32)
        rounded = ((bits + noise) & -65536).view(torch.float32)  # -65536 == 0xFFFF0000 as int32
        # The increment may carry the largest finite value into infinity, or wrap a NaN's bits: those keep nearest.
        return torch.where(torch.isfinite(rounded) & torch.isfinite(values), rounded, values).to(dtype)
    nearest = values.to(dtype)
    below = torch.where(nearest.float() > values, nearest.nextafter(torch.full_like(nearest, -torch.inf)), nearest)
    above = below.nextafter(torch.full_like(below, torch.inf))
    share_up = ((values - below.float()) / (above.float() - below.float())).nan_to_num(0.0)  # in [0, 1)
    draw = torch.rand(values.shape, generator=generator, device=values.device)
    return torch.where(draw < share_up, above, below)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The rank's own shard of a DTensor (a view: writing it writes the DTensor), or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _float_tensors(module: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    # remove_duplicate=True (the default) visits a tied weight once, in both models alike.
    params = [p.data for p in module.parameters() if p.is_floating_point()]
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    return params, buffers
