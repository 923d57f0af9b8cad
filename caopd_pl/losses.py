"""Token-level distillation divergences, computed in chunks from final hidden states.

The student and teacher logits at completion positions are (N, V) with V up to 151,936; materialising both, with
their softmaxes and the gradient, costs several GB at N = 1,024. :func:`chunked_divergence` instead takes the final
hidden states and the two output-embedding matrices and walks the N rows in chunks. A custom autograd function
computes each chunk's gradient with respect to the student's logits during the forward pass, in closed form for all
three divergences, and immediately folds it into the gradients of the hidden states and the output embedding, so
only one chunk of logits is ever alive. The matmul count equals the naive computation's; nothing is recomputed.

Divergences, per token, with p the student's and q the teacher's next-token distribution at temperature T
(``softmax(logits / T)`` for both models, as the reference code does):
  * ``reverse``: KL(p || q), mode seeking (the mission's choice);
  * ``forward``: KL(q || p), mass covering (the reference code's default);
  * ``jsd``: beta * KL(q || m) + (1 - beta) * KL(p || m) with m = beta * q + (1 - beta) * p (TRL's generalised
    JSD; beta -> 0 tends to forward KL scaled by beta, beta -> 1 to reverse KL).

Precision: whatever the dtype of the weights and hidden states (bf16 or fp16 weights, or bf16 activations under
autocast with fp32 master weights), the vocabulary projections, the softmaxes, the loss and the weight gradient are
computed and accumulated in float32 (float64 inputs stay float64); gradients are cast to each input's dtype once, at
the end of backward. Half-precision logits would err by ~0.4% of their magnitude (bf16), i.e. ~0.1 nat at a logit
of 25, and on CPUs without native bf16 a bf16 matmul at these shapes is ~200x slower than float32.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Divergence = Literal["reverse", "forward", "jsd"]
_KINDS = ("reverse", "forward", "jsd")


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: Divergence = "reverse",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-row divergence between next-token distributions.

    Args:
        student_logits: (N, V) logits of the student.
        teacher_logits: (N, V) logits of the teacher.
        kind: ``reverse``, ``forward`` or ``jsd``.
        beta: mixture weight of the teacher in ``jsd``, in (0, 1).
        temperature: both models' logits are divided by it before the softmax.

    Returns:
        (N,) divergences in nats, computed in float32 (float64 inputs stay float64).
    """
    log_p = F.log_softmax(_at_least_float32(student_logits) / temperature, dim=-1)  # (N, V)
    log_q = F.log_softmax(_at_least_float32(teacher_logits) / temperature, dim=-1)  # (N, V)
    if kind == "reverse":
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if kind == "forward":
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    if kind == "jsd":
        log_m = torch.logaddexp(log_p + math.log1p(-beta), log_q + math.log(beta))  # (N, V)
        kl_q = (log_q.exp() * (log_q - log_m)).sum(-1)
        kl_p = (log_p.exp() * (log_p - log_m)).sum(-1)
        return beta * kl_q + (1 - beta) * kl_p
    raise ValueError(f"loss.divergence must be one of {_KINDS}, got {kind!r}")


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(c, V), (c, V) -> (c, 1) row-wise dot products, without a (c, V) temporary."""
    return (a.unsqueeze(1) @ b.unsqueeze(2)).view(-1, 1)


def _loss_and_logit_grad(
    logits: torch.Tensor, teacher_logits: torch.Tensor, kind: Divergence, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed divergence of a chunk and its closed-form gradient with respect to the student's logits, (c, V).

    With p = softmax(z), every divergence here has dL/dz = p * (g - <p, g>) per row, where g = dL/dp. The buffers are
    reused in place, so a chunk holds about three (c, V) buffers (five for ``jsd``). The inputs are consumed.
    """
    log_p = F.log_softmax(logits, dim=-1)  # (c, V)
    del logits
    log_q = F.log_softmax(teacher_logits, dim=-1)  # (c, V)
    del teacher_logits
    if kind == "forward":  # KL(q || p) = sum q (log q - log p); d/dz = p - q
        loss = _row_dot(log_q.exp(), log_q - log_p).sum()
        return loss, log_p.exp_().sub_(log_q.exp_())
    if kind == "reverse":  # KL(p || q) = sum p (log p - log q); d/dz = p * (log p - log q - KL)
        diff = log_q.neg_().add_(log_p)  # (c, V), log p - log q, in log_q's buffer
        p = log_p.exp_()  # (c, V), in log_p's buffer
        per_row = _row_dot(p, diff)  # (c, 1)
        return per_row.sum(), diff.sub_(per_row).mul_(p)
    # jsd: d/dp of beta KL(q || m) + (1 - beta) KL(p || m) is (1 - beta) log(p / m), the terms in dm/dp cancelling;
    # so d/dz = (1 - beta) * p * (log p - log m - KL(p || m)), reverse KL's form with m in place of q.
    log_m = torch.logaddexp(log_p + math.log1p(-beta), log_q + math.log(beta))  # (c, V)
    kl_q = _row_dot(log_q.exp(), log_q.sub_(log_m))  # (c, 1); log_q's buffer now holds log q - log m
    del log_q
    diff = log_m.neg_().add_(log_p)  # (c, V), log p - log m, in log_m's buffer
    p = log_p.exp_()  # (c, V), in log_p's buffer
    kl_p = _row_dot(p, diff)  # (c, 1)
    loss = beta * kl_q.sum() + (1 - beta) * kl_p.sum()
    return loss, diff.sub_(kl_p).mul_(p).mul_(1 - beta)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when any input is float64."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


_CAST_BLOCK = 8192
"""Rows of a half-precision weight upcast at a time: a (8192, H) float32 block, 29 MB at H = 896, 134 MB at 4,096."""


def _project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(c, H) @ (V, H).T -> (c, V) in ``x``'s dtype; a weight of another dtype is upcast a block of rows at a time."""
    if weight.dtype == x.dtype:
        return x @ weight.T
    out = x.new_empty(x.shape[0], weight.shape[0])  # (c, V)
    for start in range(0, weight.shape[0], _CAST_BLOCK):
        block = slice(start, start + _CAST_BLOCK)
        out[:, block] = x @ weight[block].to(x.dtype).T
    return out


def _back_project(grad_logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(c, V) @ (V, H) -> (c, H) in ``grad_logits``' dtype, upcasting the weight block by block as :func:`_project`."""
    if weight.dtype == grad_logits.dtype:
        return grad_logits @ weight
    out = grad_logits.new_zeros(grad_logits.shape[0], weight.shape[1])  # (c, H)
    for start in range(0, weight.shape[0], _CAST_BLOCK):
        block = slice(start, start + _CAST_BLOCK)
        out.addmm_(grad_logits[:, block], weight[block].to(grad_logits.dtype))
    return out


def _chunked_loss_and_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    kind: Divergence,
    beta: float,
    chunk_size: int,
    temperature: float,
    weight_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Summed divergence, dL/dhidden (N, H) and dL/dweight (V, H), all in the compute dtype.

    Half-precision weights are upcast a block of rows at a time inside each chunk, not once per call: float32
    copies of both weights would add 8 * V * H bytes while the loss runs (1 GB at 151,936 x 896, 5 GB at Qwen3-8B's
    151,936 x 4,096), more than the naive loss's logits at the paper's scale and the memory the chunking saves. The
    blocks cost time only, a block's cast being small next to its matmul and in cache: with bf16 weights the loss
    takes ~1.25x its float32-weights time on CPU at 151,936 x 896 (``benchmarks/kl_memory.py``); on a GPU the casts
    are negligible. Weights already in the compute dtype are used as they are. The float32 (V, H) weight-gradient
    accumulator remains.
    """
    compute = _compute_dtype(hidden, weight, teacher_hidden, teacher_weight)
    grad_hidden = torch.empty(hidden.shape, dtype=compute, device=hidden.device)  # (N, H)
    grad_weight = torch.zeros(weight.shape, dtype=compute, device=weight.device) if weight_grad else None  # (V, H)
    total = torch.zeros((), dtype=compute, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        # logits / T = (h / T) @ W.T: scaling the (c, H) chunk is cheaper than scaling the (c, V) logits
        h = hidden[rows].to(compute) / temperature  # (c, H)
        teacher_logits = _project(teacher_hidden[rows].to(compute) / temperature, teacher_weight)  # (c, V)
        loss, grad_logits = _loss_and_logit_grad(_project(h, weight), teacher_logits, kind, beta)  # dL/d(z / T)
        total += loss
        grad_hidden[rows] = _back_project(grad_logits, weight).div_(temperature)  # (c, H)
        if grad_weight is not None:
            grad_weight.addmm_(grad_logits.T, h)  # (V, H), dL/dW = dL/d(z / T).T @ (h / T)
    return total, grad_hidden, grad_weight


class _ChunkedDivergence(torch.autograd.Function):
    """Sum over rows of ``token_divergence``; gradients for the student's hidden states and weight only."""

    @staticmethod
    def forward(ctx, hidden, weight, teacher_hidden, teacher_weight, kind, beta, chunk_size, temperature):
        # Autocast would run the projections in half precision: the loss picks its own precision (module docstring).
        inputs = hidden, weight, teacher_hidden, teacher_weight
        with torch.autocast(hidden.device.type, enabled=False):
            total, grad_hidden, grad_weight = _chunked_loss_and_grads(
                *inputs, kind, beta, chunk_size, temperature, weight_grad=ctx.needs_input_grad[1]
            )
        ctx.save_for_backward(grad_hidden, grad_weight if grad_weight is not None else torch.empty(0))
        ctx.has_weight_grad = grad_weight is not None
        ctx.dtypes = hidden.dtype, weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        # In place, in the compute dtype, then one cast to each input's dtype: rounded once.
        grad_hidden = grad_hidden.mul_(grad_output).to(hidden_dtype)
        grad_weight = grad_weight.mul_(grad_output).to(weight_dtype) if ctx.has_weight_grad else None
        return grad_hidden, grad_weight, None, None, None, None, None, None


def chunked_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    kind: Divergence = "reverse",
    beta: float = 0.5,
    chunk_size: int = 64,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Summed token divergence over N rows without materialising (N, V) logits.

    Args:
        hidden: (N, H) student final hidden states at the counted positions.
        weight: (V, H) student output embedding (``lm_head.weight``).
        teacher_hidden: (N, H) teacher final hidden states at the same positions (no gradient flows).
        teacher_weight: (V, H) teacher output embedding; its dtype may differ from the student's.
        kind: divergence, see :func:`token_divergence`.
        beta: ``jsd`` mixture weight.
        chunk_size: rows per chunk; peak extra memory is a few (chunk_size, V) float32 buffers, a float32 block of a
            half-precision weight, and the float32 (V, H) gradient of ``weight``.
        temperature: both models' logits are divided by it before the softmax; the gradient flows through it.

    Returns:
        A float32 scalar (float64 for float64 inputs): the sum over rows. Divide by the number of counted tokens for
        the mean.

    Raises:
        ValueError: on an unknown divergence, beta outside (0, 1) for ``jsd``, chunk_size < 1, temperature <= 0, or
            student and teacher rows of different shapes.
    """
    if kind not in _KINDS:
        raise ValueError(f"loss.divergence must be one of {_KINDS}, got {kind!r}")
    if kind == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"loss.beta must be in (0, 1) for jsd, got {beta}")
    if hidden.shape != teacher_hidden.shape:
        raise ValueError(f"student rows {tuple(hidden.shape)} and teacher rows {tuple(teacher_hidden.shape)} differ")
    if chunk_size < 1:
        raise ValueError(f"loss.chunk_size must be >= 1, got {chunk_size}")
    if not temperature > 0:
        raise ValueError(f"loss.temperature must be > 0 (it divides both models' logits), got {temperature}")
    return _ChunkedDivergence.apply(
        hidden, weight, teacher_hidden.detach(), teacher_weight.detach(), kind, beta, chunk_size, temperature
    )


def masked_mean_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    student_mask: torch.Tensor,
    teacher_mask: torch.Tensor,
    kind: Divergence = "reverse",
    beta: float = 0.5,
    chunk_size: int = 64,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token divergence over the masked positions of a padded batch.

    The student and teacher sequences differ in prompt length, so each has its own mask; both select the
    positions that predict the same completion tokens, in the same order.

    Args:
        hidden: (B, Ts, H) student final hidden states.
        weight: (V, H) student output embedding.
        teacher_hidden: (B, Tt, H) teacher final hidden states.
        teacher_weight: (V, H) teacher output embedding.
        student_mask: (B, Ts) bool, positions whose next token is a counted completion token.
        teacher_mask: (B, Tt) bool, the teacher's positions for the same tokens.
        kind, beta, chunk_size, temperature: see :func:`chunked_divergence`.

    Returns:
        (mean divergence, number of counted tokens). The mean is 0 when nothing is counted.
    """
    rows = hidden[student_mask]  # (N, H)
    teacher_rows = teacher_hidden[teacher_mask]  # (N, H)
    count = student_mask.sum()
    if int(teacher_mask.sum()) != int(count):
        raise ValueError(f"student counts {int(count)} completion tokens but teacher {int(teacher_mask.sum())}")
    total = chunked_divergence(rows, weight, teacher_rows, teacher_weight, kind, beta, chunk_size, temperature)
    return total / count.clamp_min(1), count
