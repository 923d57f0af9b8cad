"""Token-level distillation divergences, computed in chunks from final hidden states.

The student and teacher logits at completion positions are (N, V) with V up to 151,936; materialising both, with
their softmaxes and the gradient, costs several GB at N = 1,024. :func:`chunked_divergence` instead takes the final
hidden states and the two output-embedding matrices and walks the N rows in chunks. A custom autograd function
computes each chunk's gradient with respect to the student's logits during the forward pass (in closed form for the
two KLs, by autograd on the chunk alone for JSD) and immediately folds it into the gradients of the hidden states
and the output embedding, so only one chunk of logits is ever alive. The matmul count equals the naive
computation's; nothing is recomputed.

Divergences, per token, with p the student's and q the teacher's next-token distribution:
  * ``reverse``: KL(p || q), mode seeking (the mission's choice);
  * ``forward``: KL(q || p), mass covering (the reference code's default);
  * ``jsd``: beta * KL(q || m) + (1 - beta) * KL(p || m) with m = beta * q + (1 - beta) * p (TRL's generalised
    JSD; beta -> 0 tends to forward KL scaled by beta, beta -> 1 to reverse KL).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Divergence = Literal["reverse", "forward", "jsd"]


def token_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: Divergence = "reverse", beta: float = 0.5
) -> torch.Tensor:
    """Per-row divergence between next-token distributions.

    Args:
        student_logits: (N, V) logits of the student.
        teacher_logits: (N, V) logits of the teacher.
        kind: ``reverse``, ``forward`` or ``jsd``.
        beta: mixture weight of the teacher in ``jsd``, in (0, 1).

    Returns:
        (N,) divergences in nats, computed in float32 (float64 inputs stay float64).
    """
    log_p = F.log_softmax(_at_least_float32(student_logits), dim=-1)  # (N, V)
    log_q = F.log_softmax(_at_least_float32(teacher_logits), dim=-1)  # (N, V)
    if kind == "reverse":
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if kind == "forward":
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    if kind == "jsd":
        log_m = torch.logsumexp(torch.stack([log_p + math.log(1 - beta), log_q + math.log(beta)]), dim=0)
        kl_q = (log_q.exp() * (log_q - log_m)).sum(-1)
        kl_p = (log_p.exp() * (log_p - log_m)).sum(-1)
        return beta * kl_q + (1 - beta) * kl_p
    raise ValueError(f"loss.divergence must be one of 'reverse', 'forward', 'jsd', got {kind!r}")


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _loss_and_logit_grad(
    logits: torch.Tensor, teacher_logits: torch.Tensor, kind: Divergence, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed divergence of a chunk and its gradient with respect to the student's logits, (c, V).

    Reverse and forward KL use their closed-form gradients, in place, so a chunk holds about three (c, V) buffers;
    ``jsd`` falls back to autograd on the chunk.
    """
    if kind == "jsd":
        with torch.enable_grad():
            logits = logits.detach().requires_grad_()
            loss = token_divergence(logits, teacher_logits, kind, beta).sum()
            (grad,) = torch.autograd.grad(loss, logits)
        return loss.detach(), grad
    log_p = F.log_softmax(_at_least_float32(logits), dim=-1)  # (c, V)
    del logits
    log_q = F.log_softmax(_at_least_float32(teacher_logits), dim=-1)  # (c, V)
    del teacher_logits
    if kind == "forward":  # KL(q || p) = sum q (log q - log p); d/dz = p - q
        loss = (log_q.exp().unsqueeze(1) @ (log_q - log_p).unsqueeze(2)).sum()
        return loss, log_p.exp_().sub_(log_q.exp_())
    if kind == "reverse":  # KL(p || q) = sum p (log p - log q); d/dz = p * (log p - log q - KL)
        diff = log_q.neg_().add_(log_p)  # (c, V), log p - log q, in log_q's buffer
        p = log_p.exp_()  # (c, V), in log_p's buffer
        per_row = (p.unsqueeze(1) @ diff.unsqueeze(2)).view(-1, 1)  # (c, 1), no (c, V) temporary
        return per_row.sum(), diff.sub_(per_row).mul_(p)
    raise ValueError(f"loss.divergence must be one of 'reverse', 'forward', 'jsd', got {kind!r}")


class _ChunkedDivergence(torch.autograd.Function):
    """Sum over rows of ``token_divergence``; gradients for the student's hidden states and weight only."""

    @staticmethod
    def forward(ctx, hidden, weight, teacher_hidden, teacher_weight, kind, beta, chunk_size):
        grad_hidden = torch.zeros_like(hidden)  # (N, H)
        accumulate = torch.promote_types(weight.dtype, torch.float32)
        grad_weight = torch.zeros_like(weight, dtype=accumulate) if weight.requires_grad else None  # (V, H)
        total = hidden.new_zeros((), dtype=accumulate)
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            with torch.no_grad():
                teacher_logits = teacher_hidden[rows] @ teacher_weight.T  # (c, V)
            loss, grad_logits = _loss_and_logit_grad(hidden[rows] @ weight.T, teacher_logits, kind, beta)  # (c, V)
            total += loss
            grad_hidden[rows] = (grad_logits @ weight).to(hidden.dtype)  # (c, H)
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.T.to(accumulate), hidden[rows].to(accumulate))  # (V, H)
        ctx.save_for_backward(grad_hidden, grad_weight if grad_weight is not None else torch.empty(0))
        ctx.has_weight_grad = grad_weight is not None
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        # In place: the (V, H) buffer is as large as the output embedding, and backward runs once.
        grad_hidden = grad_hidden.mul_(grad_output)
        grad_weight = grad_weight.mul_(grad_output).to(ctx.weight_dtype) if ctx.has_weight_grad else None
        return grad_hidden, grad_weight, None, None, None, None, None


def chunked_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    kind: Divergence = "reverse",
    beta: float = 0.5,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Summed token divergence over N rows without materialising (N, V) logits.

    Args:
        hidden: (N, H) student final hidden states at the counted positions.
        weight: (V, H) student output embedding (``lm_head.weight``).
        teacher_hidden: (N, H) teacher final hidden states at the same positions (no gradient flows).
        teacher_weight: (V, H) teacher output embedding.
        kind: divergence, see :func:`token_divergence`.
        beta: ``jsd`` mixture weight.
        chunk_size: rows per chunk; peak extra memory is a few (chunk_size, V) float32 buffers.

    Returns:
        A scalar: the sum over rows. Divide by the number of counted tokens for the mean.
    """
    if kind == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"loss.beta must be in (0, 1) for jsd, got {beta}")
    if hidden.shape != teacher_hidden.shape:
        raise ValueError(f"student rows {tuple(hidden.shape)} and teacher rows {tuple(teacher_hidden.shape)} differ")
    if chunk_size < 1:
        raise ValueError(f"loss.chunk_size must be >= 1, got {chunk_size}")
    return _ChunkedDivergence.apply(
        hidden, weight, teacher_hidden.detach(), teacher_weight.detach(), kind, beta, chunk_size
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
        kind, beta, chunk_size: see :func:`chunked_divergence`.

    Returns:
        (mean divergence, number of counted tokens). The mean is 0 when nothing is counted.
    """
    rows = hidden[student_mask]  # (N, H)
    teacher_rows = teacher_hidden[teacher_mask]  # (N, H)
    count = student_mask.sum()
    if int(teacher_mask.sum()) != int(count):
        raise ValueError(f"student counts {int(count)} completion tokens but teacher {int(teacher_mask.sum())}")
    total = chunked_divergence(rows, weight, teacher_rows, teacher_weight, kind, beta, chunk_size)
    return total / count.clamp_min(1), count
