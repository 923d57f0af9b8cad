"""GRPO, the optimiser of the paper's RL baselines (RLVR and RLCR), on the same rollouts as the distillation methods.

Per epoch, for this rank's share of the epoch's prompts, :class:`caopd_pl.datamodule.RolloutDataModule` with
``data.rl`` set:

1. samples K completions per prompt from the current student and verifies them, exactly as for SDFT and CaOPD (the
   same engine, seeds, verifier and prompt budget);
2. scores each completion with the reward (:mod:`caopd_pl.rewards`: ``rlvr`` correctness, ``rlcr`` correctness plus
   a Brier score of the stated confidence) and normalises within each prompt's group (:func:`group_advantages`):
   A = (r - mean of the group's r) / (std of the group's r + eps);
3. records the log-probability of every sampled token under the student that sampled it (:func:`score_old_logprobs`,
   the "old policy" of the ratio), and serves the (prompt + completion) sequences, each sequence
   ``data.rl.passes`` times per epoch.

:class:`caopd_pl.module.CaOPDModule` then minimises, per completion token t of a sequence with advantage A,

    l_t = -min(rho_t A, clip(rho_t, 1 - clip_low, 1 + clip_high) A) + kl_coef * KL_t,
    rho_t = pi(y_t) / pi_old(y_t),

averaged within each sequence and then over sequences (``model.policy_loss.average: sequence``, GRPO's) or over
every token of the micro-batch (``token``, DAPO's). KL_t is the penalty towards the *start model* (the module's
teacher, which RL batches never EMA-update): the ``k3`` estimator on the sampled token, exp(r) - r - 1 with r = log
pi_ref(y_t) - log pi(y_t) (DeepSeekMath's, TRL's), or the ``exact`` KL(pi || pi_ref) over the whole vocabulary.
Log-probabilities are computed in chunks from the final hidden states, as the distillation loss is
(:mod:`caopd_pl.losses`): the (N, V) logits never exist whole, and they are float32 whatever the weights' dtype.

Departures from DeepSeekMath's GRPO and TRL's ``GRPOTrainer``, on purpose:

- the old log-probabilities are recomputed by the training model (in eval mode, no dropout) right after sampling,
  as TRL does when a rollout batch feeds more than one optimizer step; a ``vllm`` engine's own log-probabilities
  are not used (they differ from the trainer's in the last bits, and CaOPD never needed them);
- both log-probabilities divide the logits by the rollouts' sampling temperature (``data.rollout.temperature``,
  TRL's convention: rho is the ratio of the distributions that sampled), which the batch carries;
- the std is the unbiased one of the K rewards (TRL's); ``data.rl.scale_rewards: false`` only centres them (Dr.
  GRPO's, and the RLCR reference's setting);
- truncated completions are trained like finished ones (the RLCR reference masks them out); nothing is skipped,
  so every method sees the same prompts x K rollouts per epoch;
- every completion token counts (the distillation loss's ``skip_first_tokens`` does not apply).

Run (the quickstart's warm start, rollouts and budget, then GRPO with the RLCR reward)::

    python -m caopd_pl fit --config configs/quickstart.yaml --config configs/layers/rlcr.yaml
    python benchmarks/miscalibration.py --out runs/baselines --methods base sdft caopd rlvr rlcr

Pure PyTorch (and the Hugging Face model's forward): no Lightning.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from caopd_pl.losses import AVERAGES, _back_project, _compute_dtype, _project, chunked_divergence
from caopd_pl.models.loading import final_hidden_states
from caopd_pl.rewards import Reward, make_reward
from caopd_pl.sharding import run_as_forward

if TYPE_CHECKING:
    from caopd_pl.rollout.base import Rollout

KL_ESTIMATORS = ("k3", "exact")


@dataclass(frozen=True)
class RLConfig:
    """The RL methods' training examples (``data.rl``): the reward, the group normalisation, the passes per epoch."""

    reward: str = "rlcr"
    """``rlcr`` (correctness plus the Brier score of the stated confidence), ``rlvr`` (correctness only), or the
    ``name`` of any other defined ``caopd_pl.rewards.Reward`` subclass."""
    reward_options: dict[str, float] = field(default_factory=dict)
    """Constructor arguments of the reward (``rlcr`` takes ``unparsed``, the reward of a completion without a
    parsable confidence, default -2)."""
    scale_rewards: bool = True
    """Divide each group's centred rewards by their standard deviation + ``eps`` (GRPO's); false only centres them
    (Dr. GRPO's, and the RLCR reference's)."""
    eps: float = 1e-4
    """Added to the group's standard deviation (TRL's value)."""
    passes: int = 1
    """Optimisation passes over each epoch's rollouts, each in a fresh seeded order (TRL's ``num_iterations``)."""

    def make_reward(self) -> Reward:
        """The configured reward, its settings checked.

        The checks run here, when the datamodule is built, not at parse time: inside the optional ``data.rl`` the
        parser would bury their one line in its account of every type the option could take.

        Raises:
            ValueError: an unknown reward or reward option, a bad value, ``passes`` < 1 or ``eps`` <= 0.
        """
        if self.passes < 1:
            raise ValueError(f"data.rl.passes must be >= 1, got {self.passes}")
        if not self.eps > 0:
            raise ValueError(f"data.rl.eps must be > 0, got {self.eps}")
        return make_reward(self.reward, **self.reward_options)


@dataclass(frozen=True)
class PolicyLossConfig:
    """GRPO's objective (``model.policy_loss``): what the module minimises on the RL methods' batches."""

    clip_low: float = 0.2
    """The ratio is clipped below at 1 - clip_low (PPO's epsilon)."""
    clip_high: float = 0.2
    """The ratio is clipped above at 1 + clip_high (larger than ``clip_low``: DAPO's clip-higher)."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to the start model (DeepSeekMath 0.04; TRL's default and the RLCR reference: 0)."""
    kl: Literal["k3", "exact"] = "k3"
    """``k3``: the estimator exp(r) - r - 1 on the sampled token (DeepSeekMath's); ``exact``: KL(pi || pi_ref) over
    the whole vocabulary, computed in chunks."""
    average: Literal["sequence", "token"] = "sequence"
    """``sequence``: the mean over each completion's tokens, then over completions (GRPO's); ``token``: the mean over
    every completion token of the micro-batch (DAPO's)."""
    chunk_size: int = 64
    """Completion tokens per chunk of the vocabulary projection; bounds peak memory."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.clip_low < 1.0 and self.clip_high >= 0.0):
            raise ValueError(
                f"model.policy_loss.clip_low must be in [0, 1) and model.policy_loss.clip_high >= 0, got "
                f"{self.clip_low} and {self.clip_high}"
            )
        if self.kl_coef < 0.0:
            raise ValueError(f"model.policy_loss.kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl not in KL_ESTIMATORS:
            raise ValueError(f"model.policy_loss.kl must be one of {list(KL_ESTIMATORS)}, got {self.kl!r}")
        if self.average not in AVERAGES:
            raise ValueError(f"model.policy_loss.average must be one of {list(AVERAGES)}, got {self.average!r}")
        if self.chunk_size < 1:
            raise ValueError(f"model.policy_loss.chunk_size must be >= 1, got {self.chunk_size}")


@dataclass
class PolicyExample:
    """One RL training example: a sampled completion after its plain prompt, with its group-relative advantage."""

    prompt: list[int]
    completion: list[int]
    """The sampled tokens as they are (ending with the stop id when one was sampled)."""
    reward: float
    advantage: float
    old_logprobs: list[float] | None = None
    """Log-probability of each completion token under the sampling student (:func:`score_old_logprobs`)."""


# ---- examples ------------------------------------------------------------------------------------------------------


def group_advantages(rewards: Sequence[float], scale: bool = True, eps: float = 1e-4) -> list[float]:
    """(r - mean(r)) / (std(r) + eps) over one prompt's group of rewards; without ``scale``, r - mean(r).

    The std is the unbiased sample standard deviation (TRL's); a group of equal rewards gets advantages 0.
    """
    mean = statistics.fmean(rewards)
    centred = [reward - mean for reward in rewards]
    if not scale:
        return centred
    std = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
    return [value / (std + eps) for value in centred]


def policy_examples(
    student_prompts: Sequence[list[int]],
    rollouts: Sequence[Sequence[Rollout]],
    correct: Sequence[Sequence[bool]],
    reward: Reward,
    config: RLConfig,
) -> list[PolicyExample]:
    """One example per rollout, in prompt order then rollout order, rewarded and normalised within its group."""
    examples = []
    for prompt, group, verdicts in zip(student_prompts, rollouts, correct):
        rewards = [reward(rollout.text, verdict) for rollout, verdict in zip(group, verdicts)]
        advantages = group_advantages(rewards, config.scale_rewards, config.eps)
        examples += [
            PolicyExample(prompt, list(rollout.token_ids), r, a) for rollout, r, a in zip(group, rewards, advantages)
        ]
    return examples


def _pad(examples: Sequence[PolicyExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T), attention (B, T) and the mask (B, T) of positions that predict a completion token."""
    width = max(len(e.prompt) + len(e.completion) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)  # (B, T)
    for row, example in enumerate(examples):
        sequence = example.prompt + example.completion
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        mask[row, len(example.prompt) - 1 : len(sequence) - 1] = True  # hidden at t predicts token t + 1
    return ids, attention, mask


def collate_policy(examples: Sequence[PolicyExample], pad_id: int, temperature: float) -> dict[str, torch.Tensor]:
    """Pad scored examples into a batch.

    Returns:
        ``student_ids``/``student_attention`` (B, T) long, ``student_mask`` (B, T) bool (positions predicting a
        completion token), and, as float32 bit patterns in int32 tensors (read them with :func:`batch_floats`):
        ``old_logprobs`` (B, T) (at the masked positions, 0 elsewhere), ``advantages`` (B,) and ``temperature`` (),
        the one the old log-probabilities were computed at. Lightning's ``bf16-true``/``16-true`` precision casts
        every floating tensor of a batch to half precision before the step (``convert_input``); integers pass
        unchanged. Cast, the old log-probabilities would lose up to 2^-9 of their value (0.06 at -20) and the
        temperature 0.7 would become 0.6992: the first step's ratios would not be 1.

    Raises:
        ValueError: an example has no old log-probabilities (score them first: :func:`score_old_logprobs`).
    """
    ids, attention, mask = _pad(examples, pad_id)
    old = torch.zeros(ids.shape, dtype=torch.float32)  # (B, T)
    for row, example in enumerate(examples):
        if example.old_logprobs is None or len(example.old_logprobs) != len(example.completion):
            raise ValueError("a policy example without the old log-probability of each token: score_old_logprobs first")
        old[row, mask[row]] = torch.tensor(example.old_logprobs, dtype=torch.float32)
    advantages = torch.tensor([e.advantage for e in examples], dtype=torch.float32)  # (B,)
    floats = {
        "old_logprobs": old,
        "advantages": advantages,
        "temperature": torch.tensor(temperature, dtype=torch.float32),
    }
    batch = {"student_ids": ids, "student_attention": attention, "student_mask": mask}
    return batch | {key: value.to(torch.float32).view(torch.int32) for key, value in floats.items()}


def batch_floats(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """The float field ``key`` of a policy batch: float32 from :func:`collate_policy`'s bit patterns; a floating
    tensor (a batch written by hand) as it is."""
    value = batch[key]
    return value.view(torch.float32) if value.dtype == torch.int32 else value


def is_policy_batch(batch: dict[str, torch.Tensor]) -> bool:
    """Whether ``batch`` was made by :func:`collate_policy` (rather than :func:`caopd_pl.data.collate_distill`)."""
    return "advantages" in batch


# ---- token log-probabilities, chunked ----------------------------------------------------------------------------


class _TokenLogprobs(torch.autograd.Function):
    """log softmax(h W^T / T)[y] per row, one chunk of logits alive at a time; gradients for h and W.

    Unlike the distillation loss, the upstream gradient of each row is known only after the forward (the clipped
    objective is a function of these values), so backward projects each chunk again: one more (c, H) x (H, V)
    matmul per chunk than :mod:`caopd_pl.losses`, for an objective written as plain tensor code.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size):
        compute = _compute_dtype(hidden, weight)
        out = torch.empty(hidden.shape[0], dtype=compute, device=hidden.device)  # (N,)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_size):
                rows = slice(start, start + chunk_size)
                logits = _project(hidden[rows].to(compute) / temperature, weight)  # (c, V)
                picked = logits.gather(1, targets[rows, None]).squeeze(1)  # (c,)
                out[rows] = picked - logits.logsumexp(-1)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_output):
        hidden, weight, targets = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        compute = _compute_dtype(hidden, weight)
        grad_hidden = torch.empty(hidden.shape, dtype=compute, device=hidden.device)  # (N, H)
        needs_weight = ctx.needs_input_grad[1]
        grad_weight = torch.zeros(weight.shape, dtype=compute, device=weight.device) if needs_weight else None  # (V, H)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_size):
                rows = slice(start, start + chunk_size)
                h = hidden[rows].to(compute) / temperature  # (c, H)
                g = grad_output[rows].to(compute)  # (c,)
                # d log p_y / d(z / T) = onehot(y) - p, scaled by each row's upstream gradient
                grad_logits = _project(h, weight).softmax(-1).mul_(-g[:, None])  # (c, V)
                grad_logits.scatter_add_(1, targets[rows, None], g[:, None])
                grad_hidden[rows] = _back_project(grad_logits, weight).div_(temperature)  # (c, H)
                if grad_weight is not None:
                    grad_weight.addmm_(grad_logits.T, h)  # (V, H)
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        return grad_hidden.to(hidden.dtype), grad_weight, None, None, None


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 64,
) -> torch.Tensor:
    """log softmax(hidden @ weight.T / temperature)[targets] per row, without materialising (N, V) logits.

    Args:
        hidden: (N, H) final hidden states at the positions that predict ``targets``.
        weight: (V, H) output embedding.
        targets: (N,) long, the token each row predicts.
        temperature: the logits are divided by it.
        chunk_size: rows per chunk; peak extra memory is a few (chunk_size, V) float32 buffers.

    Returns:
        (N,) float32 log-probabilities (float64 for float64 inputs); differentiable in ``hidden`` and ``weight``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (it divides the logits), got {temperature}")
    return _TokenLogprobs.apply(hidden, weight, targets, temperature, chunk_size)


def completion_logprobs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    attention: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    chunk_size: int = 64,
) -> torch.Tensor:
    """(N,) log-probabilities of the tokens that follow the ``mask`` positions (B, T) of ``ids`` under ``model``."""
    hidden = final_hidden_states(model, ids, attention)  # (B, T, H)
    targets = ids.roll(-1, dims=1)[mask]  # (N,); a masked position is never a sequence's last
    return token_logprobs(hidden[mask], model.get_output_embeddings().weight, targets, temperature, chunk_size)


@torch.no_grad()
def score_old_logprobs(
    model: torch.nn.Module,
    examples: Sequence[PolicyExample],
    pad_id: int,
    temperature: float,
    batch_size: int = 32,
    chunk_size: int = 64,
) -> None:
    """Fill each example's ``old_logprobs``: its completion tokens' log-probabilities under ``model``, in eval mode.

    ``model`` gets its mode back. Sharded (FSDP2), each batch runs as a forward of the model, as the losses do; every
    rank scores as many batches (each rank serves prompts x K examples).
    """
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            part = examples[start : start + batch_size]
            ids, attention, mask = (tensor.to(device) for tensor in _pad(part, pad_id))
            values = run_as_forward(model, completion_logprobs, model, ids, attention, mask, temperature, chunk_size)
            for example, row in zip(part, values.float().cpu().split(mask.sum(-1).tolist())):
                example.old_logprobs = row.tolist()
    finally:
        model.train(training)


# ---- the objective -----------------------------------------------------------------------------------------------


def token_weights(mask: torch.Tensor, average: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N,) weight of each masked position of ``mask`` (B, T) in the mean: ``token`` or ``sequence`` averaging.

    The weights sum to 1 when anything is masked (a batch with nothing masked weighs nothing).
    """
    lengths = mask.sum(-1)  # (B,)
    count = int(lengths.sum())
    if average == "token":
        return torch.full((count,), 1.0 / max(count, 1), dtype=dtype, device=mask.device)
    per_row = 1.0 / lengths.repeat_interleave(lengths).to(dtype)  # (N,), each row's 1 / its length
    return per_row / (lengths > 0).sum().clamp_min(1)


def clipped_objective(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    config: PolicyLossConfig,
    reference_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum over tokens of GRPO's per-token loss (module docstring), with the ``k3`` penalty when given
    the reference's log-probabilities.

    Args:
        logprobs: (N,) the current policy's log-probabilities of the sampled tokens (gradients flow through them).
        old_logprobs: (N,) the sampling policy's.
        advantages: (N,) each token's sequence advantage.
        weights: (N,) each token's weight in the mean (:func:`token_weights`).
        config: the clipping range and the KL coefficient.
        reference_logprobs: (N,) the start model's, for ``kl: k3``; None adds no penalty.

    Returns:
        (loss, stats): the scalar loss and detached ``clip_fraction`` (the weighted share of tokens whose ratio is
        clipped, so that they carry no gradient) and, with a reference, ``kl``.
    """
    ratio = (logprobs - old_logprobs.to(logprobs.dtype)).exp()  # (N,)
    clipped = ratio.clamp(1.0 - config.clip_low, 1.0 + config.clip_high)  # (N,)
    unclipped_term, clipped_term = ratio * advantages, clipped * advantages
    per_token = -torch.minimum(unclipped_term, clipped_term)  # (N,)
    weights = weights.to(logprobs.dtype)
    stats = {"clip_fraction": ((clipped_term < unclipped_term).to(weights.dtype) * weights).sum().detach()}
    if reference_logprobs is not None:
        log_ratio = reference_logprobs.to(logprobs.dtype) - logprobs  # (N,), log pi_ref / pi
        k3 = log_ratio.exp() - log_ratio - 1.0  # (N,), >= 0, an unbiased estimate of KL(pi || pi_ref)
        per_token = per_token + config.kl_coef * k3
        stats["kl"] = (k3 * weights).sum().detach()
    return (per_token * weights).sum(), stats


def grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    batch: dict[str, torch.Tensor],
    config: PolicyLossConfig,
    reference_hidden: torch.Tensor | None = None,
    reference_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's loss of a :func:`collate_policy` batch from the student's final hidden states.

    Args:
        hidden: (B, T, H) the student's final hidden states of ``batch["student_ids"]``.
        weight: (V, H) the student's output embedding.
        batch: the policy batch (:func:`collate_policy`; its float fields are read with :func:`batch_floats`).
        config: the objective's settings.
        reference_hidden: (B, T, H) the start model's hidden states of the same ids; needed when ``kl_coef`` > 0.
        reference_weight: (V, H) the start model's output embedding; the same.

    Returns:
        (loss, stats): a float32 scalar (float64 for float64 inputs) and the detached ``clip_fraction``, ``kl``
        (with a penalty) and ``tokens`` (the number of completion tokens).
    """
    mask, temperature = batch["student_mask"], float(batch_floats(batch, "temperature"))
    lengths = mask.sum(-1)  # (B,)
    targets = batch["student_ids"].roll(-1, dims=1)[mask]  # (N,)
    rows = hidden[mask]  # (N, H)
    logprobs = token_logprobs(rows, weight, targets, temperature, config.chunk_size)  # (N,)
    advantages = batch_floats(batch, "advantages").repeat_interleave(lengths).to(logprobs.dtype)  # (N,)
    weights = token_weights(mask, config.average, logprobs.dtype)  # (N,)
    penalised = config.kl_coef > 0
    if penalised and (reference_hidden is None or reference_weight is None):
        raise ValueError("model.policy_loss.kl_coef > 0 needs the start model's hidden states and output embedding")
    reference_rows = reference_hidden[mask].detach() if penalised else None  # (N, H)
    reference = None
    if penalised and config.kl == "k3":
        with torch.no_grad():
            reference = token_logprobs(reference_rows, reference_weight, targets, temperature, config.chunk_size)
    old_logprobs = batch_floats(batch, "old_logprobs")[mask]  # (N,)
    loss, stats = clipped_objective(logprobs, old_logprobs, advantages, weights, config, reference)
    if penalised and config.kl == "exact":
        kl = chunked_divergence(
            rows,
            weight,
            reference_rows,
            reference_weight,
            "reverse",
            chunk_size=config.chunk_size,
            temperature=temperature,
            row_weights=weights,
        )  # the weighted sum of each token's KL(pi || pi_ref), its gradient to the student only
        loss = loss + config.kl_coef * kl
        stats["kl"] = kl.detach()
    stats["tokens"] = lengths.sum()
    return loss, stats
