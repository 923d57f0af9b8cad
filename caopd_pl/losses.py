"""Token-level distillation divergences: one class each, computed in chunks from final hidden states.

The student and teacher logits at completion positions are (N, V) with V up to 151,936; materialising both, with
their softmaxes and the gradient, costs several GB at N = 1,024. :func:`chunked_divergence` instead takes the final
hidden states and the two output-embedding matrices and walks the N rows in chunks. A custom autograd function
computes each chunk's gradient with respect to the student's logits during the forward pass and immediately folds it
into the gradients of the hidden states and the output embedding, so only one chunk of logits is ever alive. The
three built-in divergences give that gradient in closed form (the matmul count then equals the naive computation's;
nothing is recomputed); any other divergence gets it by autograd through its per-token value, one chunk at a time.

Divergences, per token, with p the student's and q the teacher's next-token distribution at temperature T
(``softmax(logits / T)`` for both models, as the reference code does):
  * ``reverse``: KL(p || q), mode seeking (the mission's choice);
  * ``forward``: KL(q || p), mass covering (the reference code's default);
  * ``jsd``: beta * KL(q || m) + (1 - beta) * KL(p || m) with m = beta * q + (1 - beta) * p (TRL's generalised
    JSD; beta -> 0 tends to forward KL scaled by beta, beta -> 1 to reverse KL).

Adding one is defining one class. A subclass that sets ``name`` is registered under it when defined
(``model.loss.divergence: hellinger`` then selects it, once the module defining it is imported); any subclass, named
or not, is selected by its class path, its constructor's parameters given as ``init_args`` (:mod:`caopd_pl.registry`)::

    class SquaredHellinger(Divergence):
        name = "hellinger"

        def per_token(self, log_p, log_q):  # (N, V), (N, V) -> (N,): 1 - sum sqrt(p q)
            return 1 - ((log_p + log_q) / 2).exp().sum(-1)

    # model.loss.divergence: {class_path: my_losses.SquaredHellinger}
    # model.loss.divergence: {class_path: jsd, init_args: {beta: 0.3}}   (a built-in's parameter)

The divergence is built once, when :class:`LossConfig` is, and the loss functions take the object.

Precision: whatever the dtype of the weights and hidden states (bf16 or fp16 weights, or bf16 activations under
autocast with fp32 master weights), the vocabulary projections, the softmaxes, the loss and the weight gradient are
computed and accumulated in float32 (float64 inputs stay float64); gradients are cast to each input's dtype once, at
the end of backward. Half-precision logits would err by ~0.4% of their magnitude (bf16), i.e. ~0.1 nat at a logit
of 25, and on CPUs without native bf16 a bf16 matmul at these shapes is ~200x slower than float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from caopd_pl.registry import Registry


class Divergence:
    """A token-level divergence between the student's (p) and the teacher's (q) next-token distributions.

    A subclass implements :meth:`per_token`; one that sets ``name`` is registered in :data:`DIVERGENCES` under it. It
    may also implement :meth:`closed_form`, the chunk's value and its gradient with respect to the student's logits
    computed directly; without it, :func:`logit_grad_by_autograd` differentiates :meth:`per_token` one chunk at a
    time. Its parameters are constructor arguments (``init_args`` in a config).
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        DIVERGENCES.add_own_name(cls)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__qualname__}({arguments})"

    def per_token(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """The divergence of each row.

        Args:
            log_p: (N, V) the student's log-probabilities, float32 (float64 for float64 inputs).
            log_q: (N, V) the teacher's log-probabilities, same dtype.

        Returns:
            (N,) divergences in nats.
        """
        raise NotImplementedError(f"{type(self).__qualname__} must implement per_token(log_p, log_q)")

    def closed_form(self, log_p: torch.Tensor, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Optional: the divergence of each row of a chunk and its gradient with respect to the student's logits.

        With p = softmax(z), dL/dz = p * (g - <p, g>) per row, where g = dL/dp. The inputs may be consumed (reused
        in place), which keeps a chunk to a few (c, V) buffers.

        Args:
            log_p: (c, V) the student's log-probabilities.
            log_q: (c, V) the teacher's log-probabilities.

        Returns:
            ((c,) :meth:`per_token` of the rows, (c, V) gradient of their sum with respect to the logits: row i's
            gradient is that of row i's value, the rows being independent).
        """
        raise NotImplementedError  # not overridden: has_closed_form() is False and autograd is used instead

    @classmethod
    def has_closed_form(cls) -> bool:
        """Whether the class overrides :meth:`closed_form`."""
        return cls.closed_form is not Divergence.closed_form


DIVERGENCES: Registry[Divergence] = Registry(Divergence, "model.loss.divergence", "divergence")
"""Every :class:`Divergence` subclass that sets a ``name``, by that name (the built-ins: ``reverse``, ``forward``,
``jsd``); :meth:`~caopd_pl.registry.Registry.build` also takes class paths and ``{class_path, init_args}``."""

DivergenceSpec = Divergence | str | dict[str, Any]
"""A divergence, or what names one: a registered name, a class path, or ``{class_path, init_args}``."""


def _weighted_rows(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(c, V) ``values`` *= ``weights`` in place; returns the row sums, (c, 1).

    Multiply, then sum: torch's reductions add in blocks (cascade), which stays exact in float32 over a vocabulary
    row, where a batched matmul's dot product does not (docs/losses.md, "Exactness"). In place: no (c, V) temporary.
    """
    return values.mul_(weights).sum(-1, keepdim=True)


class ReverseKL(Divergence):
    """KL(p || q) = sum p (log p - log q), mode seeking; dL/dz = p * (log p - log q - KL)."""

    name = "reverse"

    def per_token(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return (log_p.exp() * (log_p - log_q)).sum(-1)  # (N,)

    def closed_form(self, log_p: torch.Tensor, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = log_q.neg_().add_(log_p)  # (c, V), log p - log q, in log_q's buffer
        p = log_p.exp_()  # (c, V), in log_p's buffer
        per_row = _weighted_rows(p, diff)  # (c, 1); diff's buffer now holds p (log p - log q)
        return per_row.view(-1), diff.addcmul_(p, per_row, value=-1)  # p (log p - log q - KL)


class ForwardKL(Divergence):
    """KL(q || p) = sum q (log q - log p), mass covering; dL/dz = p - q."""

    name = "forward"

    def per_token(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return (log_q.exp() * (log_q - log_p)).sum(-1)  # (N,)

    def closed_form(self, log_p: torch.Tensor, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = log_q.exp()  # (c, V)
        per_row = _weighted_rows(q, log_q.sub_(log_p))  # (c, 1); log_q's buffer now holds q (log q - log p)
        return per_row.view(-1), log_p.exp_().sub_(q)  # (c, V), p - q, in log_p's buffer


class JSD(Divergence):
    """beta KL(q || m) + (1 - beta) KL(p || m), m = beta q + (1 - beta) p (TRL's generalised JSD).

    d/dp of the sum is (1 - beta) log(p / m), the terms in dm/dp cancelling; so dL/dz = (1 - beta) * p *
    (log p - log m - KL(p || m)), reverse KL's form with m in place of q.

    Args:
        beta: the teacher's weight in the mixture, in (0, 1).
    """

    name = "jsd"

    def __init__(self, beta: float = 0.5) -> None:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"model.loss.divergence.init_args.beta must be in (0, 1) for jsd, got {beta}")
        self.beta = beta

    def _log_m_over_q(self, diff: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """log m - log q = log(beta + (1 - beta) e^(log p - log q)), from ``diff`` = log p - log q.

        From the difference, not as log m - log q: both are about -log V, and their float32 rounding would swamp a
        divergence whose terms are that small. ``inplace``: into ``diff``'s buffer (no autograd).
        """
        log_beta = diff.new_tensor(math.log(self.beta))
        if inplace:
            shifted = diff.add_(math.log1p(-self.beta))
            return torch.logaddexp(shifted, log_beta, out=shifted)
        return torch.logaddexp(diff + math.log1p(-self.beta), log_beta)

    def per_token(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        diff = log_p - log_q  # (N, V)
        log_m_over_q = self._log_m_over_q(diff)  # (N, V)
        kl_q = -(log_q.exp() * log_m_over_q).sum(-1)  # (N,)
        kl_p = (log_p.exp() * (diff - log_m_over_q)).sum(-1)  # (N,)
        return self.beta * kl_q + (1 - self.beta) * kl_p

    def closed_form(self, log_p: torch.Tensor, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta = self.beta
        q = log_q.exp()  # (c, V)
        diff = log_q.neg_().add_(log_p)  # (c, V), log p - log q, in log_q's buffer
        log_m_over_q = self._log_m_over_q(diff.clone(), inplace=True)  # (c, V)
        diff.sub_(log_m_over_q)  # log p - log m
        kl_q = -_weighted_rows(q, log_m_over_q)  # (c, 1)
        del q, log_m_over_q
        p = log_p.exp_()  # (c, V), in log_p's buffer
        kl_p = _weighted_rows(p, diff)  # (c, 1); diff's buffer now holds p (log p - log m)
        per_row = (beta * kl_q + (1 - beta) * kl_p).view(-1)  # (c,)
        return per_row, diff.addcmul_(p, kl_p, value=-1).mul_(1 - beta)


@dataclass(frozen=True)
class LossConfig:
    """The distillation divergence and how its per-token values are averaged."""

    divergence: DivergenceSpec = "reverse"
    """``reverse`` KL(student || teacher) (default), ``forward`` KL(teacher || student), ``jsd``, the ``name`` of any
    other ``caopd_pl.losses.Divergence`` subclass, its class path, or ``{class_path, init_args}`` (``jsd``'s teacher
    weight: ``{class_path: jsd, init_args: {beta: 0.3}}``). Built once, into the object the loss uses."""
    average: str = "token"
    """``token``: the mean over every counted completion token of the micro-batch; ``sequence``: the mean within each
    completion, then over completions (the reference's; the paper configs'), so a short completion and its confidence
    tokens weigh as much as a long one."""
    skip_first_tokens: int = 3
    """Completion tokens at the start of each completion left out of the loss (the reference skips 3)."""
    chunk_size: int = 64
    """Completion tokens per chunk of the vocabulary projection; bounds peak memory."""
    temperature: float = 1.0
    """Both models' logits are divided by it before the softmax of the loss. 1 (default) matches the models' own
    next-token distributions, the ones evaluation decodes from, whatever ``data.rollout.temperature`` explores with;
    it is also what the reference runs: it divides by its sampling temperature, TRL's default 1.0 (a GRPO convention
    that makes log-probs the sampler's, for importance ratios CaOPD drops once completions are rewritten). A student
    that matches the teacher exactly does so at every temperature: T only reweights the mismatch (T < 1 towards the
    top tokens, T > 1 towards the tail) and scales the gradient by 1/T (no T^2 factor). Set it to the rollout
    temperature to copy the reference's convention when sampling below 1."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "divergence", DIVERGENCES.build(self.divergence))  # frozen: built once, here
        if self.average not in AVERAGES:
            raise ValueError(f"model.loss.average must be one of {list(AVERAGES)}, got {self.average!r}")
        if self.skip_first_tokens < 0 or self.chunk_size < 1:
            raise ValueError(f"model.loss.skip_first_tokens must be >= 0 and model.loss.chunk_size >= 1, got {self}")
        if not self.temperature > 0:
            raise ValueError(f"model.loss.temperature must be > 0 (it divides the logits), got {self.temperature}")


def upgrade_loss_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``model.loss`` settings written before the divergence was an object (a name beside ``beta``), as today's.

    ``divergence: jsd`` with ``beta: 0.3`` becomes ``divergence: {class_path: jsd, init_args: {beta: 0.3}}``; another
    divergence drops ``beta``, which only ``jsd`` read. Today's settings come back unchanged.
    """
    upgraded = dict(settings)
    if "beta" not in upgraded:
        return upgraded
    beta = upgraded.pop("beta")
    if upgraded.get("divergence") == "jsd":
        upgraded["divergence"] = {"class_path": "jsd", "init_args": {"beta": beta}}
    return upgraded


def comparable_divergence(spec: Any) -> Any:
    """``{class_path, init_args}`` of the divergence ``spec`` builds, whatever spelling named it (``forward``,
    ``ForwardKL``'s class path, a mapping), so that two configs compare equal when they train the same loss; ``spec``
    itself when it builds nothing (a class no longer importable)."""
    try:
        divergence = DIVERGENCES.build(spec)
    except (ValueError, TypeError):
        return spec
    cls = type(divergence)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(vars(divergence))}


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    divergence: DivergenceSpec = "reverse",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-row divergence between next-token distributions.

    Args:
        student_logits: (N, V) logits of the student.
        teacher_logits: (N, V) logits of the teacher.
        divergence: a :class:`Divergence`, or what names one (:data:`DivergenceSpec`).
        temperature: both models' logits are divided by it before the softmax.

    Returns:
        (N,) divergences in nats, computed in float32 (float64 inputs stay float64).
    """
    divergence = DIVERGENCES.build(divergence)
    log_p = F.log_softmax(_at_least_float32(student_logits) / temperature, dim=-1)  # (N, V)
    log_q = F.log_softmax(_at_least_float32(teacher_logits) / temperature, dim=-1)  # (N, V)
    return divergence.per_token(log_p, log_q)


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def logit_grad_by_autograd(
    divergence: Divergence, logits: torch.Tensor, teacher_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`Divergence.per_token` of a chunk's rows, (c,), and the gradient of their sum w.r.t. the logits, (c, V).

    The fallback for a divergence without :meth:`Divergence.closed_form`: its graph lives for one chunk only.
    """
    with torch.enable_grad():  # the chunk loop runs inside an autograd.Function's forward, where grad is off
        logits = logits.detach().requires_grad_()  # (c, V)
        log_q = F.log_softmax(teacher_logits.detach(), dim=-1)  # (c, V)
        per_row = divergence.per_token(F.log_softmax(logits, dim=-1), log_q)  # (c,)
        (grad,) = torch.autograd.grad(per_row.sum(), logits)
    return per_row.detach(), grad


def _loss_and_logit_grad(
    divergence: Divergence, logits: torch.Tensor, teacher_logits: torch.Tensor, row_weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A chunk's (weighted) summed divergence and its gradient w.r.t. the student's logits, (c, V); consumes both."""
    if divergence.has_closed_form():
        log_p = F.log_softmax(logits, dim=-1)  # (c, V)
        del logits
        log_q = F.log_softmax(teacher_logits, dim=-1)  # (c, V)
        del teacher_logits
        per_row, grad = divergence.closed_form(log_p, log_q)
    else:
        per_row, grad = logit_grad_by_autograd(divergence, logits, teacher_logits)
    if row_weights is None:
        return per_row.sum(), grad
    return per_row @ row_weights, grad.mul_(row_weights.unsqueeze(1))


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
    divergence: Divergence,
    chunk_size: int,
    temperature: float,
    row_weights: torch.Tensor | None,
    weight_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Summed divergence, dL/dhidden (N, H) and dL/dweight (V, H), all in the compute dtype.

    Half-precision weights are upcast a block of rows at a time inside each chunk, not once per call: float32
    copies of both weights would add 8 * V * H bytes while the loss runs, more than the memory the chunking saves.
    The blocks cost time only (``benchmarks/kl_memory.py`` measures it). Weights already in the compute dtype are used
    as they are. The float32 (V, H) weight-gradient accumulator remains.
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
        weights = None if row_weights is None else row_weights[rows].to(compute)  # (c,)
        loss, grad_logits = _loss_and_logit_grad(divergence, _project(h, weight), teacher_logits, weights)  # dL/d(z/T)
        total += loss
        grad_hidden[rows] = _back_project(grad_logits, weight).div_(temperature)  # (c, H)
        if grad_weight is not None:
            grad_weight.addmm_(grad_logits.T, h)  # (V, H), dL/dW = dL/d(z / T).T @ (h / T)
    return total, grad_hidden, grad_weight


class _ChunkedDivergence(torch.autograd.Function):
    """Sum over rows of ``token_divergence``; gradients for the student's hidden states and weight only."""

    @staticmethod
    def forward(ctx, hidden, weight, teacher_hidden, teacher_weight, divergence, chunk_size, temperature, row_weights):
        # Autocast would run the projections in half precision: the loss picks its own precision (module docstring).
        inputs = hidden, weight, teacher_hidden, teacher_weight
        with torch.autocast(hidden.device.type, enabled=False):
            total, grad_hidden, grad_weight = _chunked_loss_and_grads(
                *inputs, divergence, chunk_size, temperature, row_weights, weight_grad=ctx.needs_input_grad[1]
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
    divergence: DivergenceSpec = "reverse",
    chunk_size: int = 64,
    temperature: float = 1.0,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed token divergence over N rows without materialising (N, V) logits.

    Args:
        hidden: (N, H) student final hidden states at the counted positions.
        weight: (V, H) student output embedding (``lm_head.weight``).
        teacher_hidden: (N, H) teacher final hidden states at the same positions (no gradient flows).
        teacher_weight: (V, H) teacher output embedding; its dtype may differ from the student's.
        divergence: a :class:`Divergence`, or what names one (:data:`DivergenceSpec`).
        chunk_size: rows per chunk; peak extra memory is a few (chunk_size, V) float32 buffers, a float32 block of a
            half-precision weight, and the float32 (V, H) gradient of ``weight``.
        temperature: both models' logits are divided by it before the softmax; the gradient flows through it.
        row_weights: (N,) optional weight of each row's divergence in the sum (no gradient flows to it).

    Returns:
        A float32 scalar (float64 for float64 inputs): the (weighted) sum over rows. Divide by the number of counted
        tokens for the mean.

    Raises:
        ValueError: on an unknown divergence, chunk_size < 1, temperature <= 0, student and teacher rows of
            different shapes, or ``row_weights`` not of shape (N,).
    """
    divergence = DIVERGENCES.build(divergence)
    if hidden.shape != teacher_hidden.shape:
        raise ValueError(f"student rows {tuple(hidden.shape)} and teacher rows {tuple(teacher_hidden.shape)} differ")
    if chunk_size < 1:
        raise ValueError(f"loss.chunk_size must be >= 1, got {chunk_size}")
    if row_weights is not None and row_weights.shape != hidden.shape[:1]:
        raise ValueError(f"row_weights of shape {tuple(row_weights.shape)} for {hidden.shape[0]} rows")
    if not temperature > 0:
        raise ValueError(f"loss.temperature must be > 0 (it divides both models' logits), got {temperature}")
    return _ChunkedDivergence.apply(
        hidden,
        weight,
        teacher_hidden.detach(),
        teacher_weight.detach(),
        divergence,
        chunk_size,
        temperature,
        None if row_weights is None else row_weights.detach(),
    )


AVERAGES = ("token", "sequence")
"""How :func:`masked_mean_divergence` averages: over every counted token of the micro-batch, or within each sequence
and then over sequences (the reference's)."""


def masked_mean_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    student_mask: torch.Tensor,
    teacher_mask: torch.Tensor,
    divergence: DivergenceSpec = "reverse",
    chunk_size: int = 64,
    temperature: float = 1.0,
    average: str = "token",
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
        divergence, chunk_size, temperature: see :func:`chunked_divergence`.
        average: ``token``: the mean over all counted tokens, each token weighing alike (a long completion weighs
            more); ``sequence``: each sequence's mean over its counted tokens, then the mean over the sequences that
            count any (each completion weighs alike, its confidence tokens included; the reference's averaging).

    Returns:
        (mean divergence, number of counted tokens). The mean is 0 when nothing is counted.
    """
    if average not in AVERAGES:
        raise ValueError(f"model.loss.average must be one of {list(AVERAGES)}, got {average!r}")
    rows = hidden[student_mask]  # (N, H)
    teacher_rows = teacher_hidden[teacher_mask]  # (N, H)
    count = student_mask.sum()
    if int(teacher_mask.sum()) != int(count):
        raise ValueError(f"student counts {int(count)} completion tokens but teacher {int(teacher_mask.sum())}")
    if average == "token":
        total = chunked_divergence(rows, weight, teacher_rows, teacher_weight, divergence, chunk_size, temperature)
        return total / count.clamp_min(1), count
    per_sequence = student_mask.sum(-1)  # (B,)
    row_weights = 1.0 / per_sequence.repeat_interleave(per_sequence).to(torch.float32)  # (N,), each row's 1 / length
    total = chunked_divergence(
        rows, weight, teacher_rows, teacher_weight, divergence, chunk_size, temperature, row_weights
    )
    return total / (per_sequence > 0).sum().clamp_min(1), count
