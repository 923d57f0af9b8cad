"""Confidence readouts: three ways to read how sure a model is of its greedy answer, reported side by side.

The answer, and so its correctness, always comes from the greedy completion; a readout only says which number stands
for the model's confidence in it:

* ``greedy``: the value its greedy completion states (``Confidence: 0.62``), parsed as the paper parses it. This is
  the paper's evaluation and what a deployed model that decodes greedily tells its user. It reads the *mode* of the
  model's distribution over confidence strings, so a model that learned "0.00 or 1.00, 60:40" states one of the two.
* ``expected``: the expectation of the stated value under the model's own distribution, given its greedy answer.
  Every candidate value string ``0.00``, ``0.01``, ..., ``1.00`` is written after the answer exactly as CaOPD's
  revision writes its targets (:func:`caopd_pl.templates.revised_completion_ids`: the body, a newline, the canonical
  ``Confidence: v`` line, EOS), scored by teacher forcing, renormalised over the 101 candidates, and averaged:
  ``sum_v v * P(v | prompt, answer) / sum_v P(v | prompt, answer)``. It is exact and tokenizer-agnostic (the
  candidates are whole token sequences, however the tokenizer splits numbers), and costs two forwards per answer:
  the prompt and answer once, with a KV cache, then the candidates' differing tokens as one batch (the answer is
  the tokenizer's own encoding of its text, as the revision re-tokenises its targets: for a BPE model it can differ
  from the ids the model sampled). It reads what
  CaOPD trains (the distribution of the stated value), so it is the number to report for a model distilled
  towards empirical success rates, and the one to use when confidences feed a decision (abstention, routing).
* ``sampled``: the mean stated value over ``num_samples`` sampled completions (``temperature``, seeded). A Monte-Carlo
  estimate of a similar quantity to ``expected``, but over whole completions (each sample may answer differently),
  and what an API user who can only sample can compute.

A confidence that is not stated reads 0, under every readout (the paper's evaluation reads a missing ``Confidence:``
line as 0): ``greedy``, when the greedy completion states none; ``expected``, likewise (it is the expectation given
*that* completion, which ends without one: no candidate line is scored in its place); ``sampled``, for each sample
that states none, in the mean. Format adherence (the share of answers that state a confidence) is reported beside
every readout's metrics: a model that never states one reads 0 everywhere and is not "calibrated" by it.

Correctness comes from the greedy answer for every readout, so accuracy is one number and only the confidence
columns differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from caopd_pl.confidence import parse_confidence
from caopd_pl.metrics import answer_tensors, calibration_summary
from caopd_pl.templates import revised_completion_ids

Readout = Literal["greedy", "expected", "sampled"]
READOUTS: tuple[str, ...] = get_args(Readout)
CANDIDATE_VALUES: tuple[float, ...] = tuple(i / 100 for i in range(101))
"""The values the ``expected`` readout scores: every two-decimal string the revision writes."""


@dataclass(frozen=True)
class ReadoutConfig:
    """Which confidence readouts evaluation computes (``model.readout``).

    Args:
        primary: the readout logged without a suffix (``test/ece``) and written as each record's ``confidence``.
        report: readouts computed beside it, logged as ``test/<readout>/ece`` and kept in each record's
            ``readouts``; the primary is always computed. ``sampled`` costs ``num_samples`` more completions per
            prompt, ``expected`` two forwards per answer.
        num_samples: completions per prompt of the ``sampled`` readout.
        temperature: their sampling temperature (1: the model's own distribution).
    """

    primary: Readout = "greedy"
    report: tuple[Readout, ...] = ("greedy", "expected")
    num_samples: int = 8
    temperature: float = 1.0

    def __post_init__(self) -> None:
        for name in (self.primary, *self.report):
            if name not in READOUTS:
                raise ValueError(f"model.readout: unknown readout {name!r}; use one of {', '.join(READOUTS)}")
        if self.num_samples < 1 or self.temperature <= 0:
            raise ValueError(
                f"model.readout.num_samples must be >= 1 and model.readout.temperature > 0, got {self.num_samples} "
                f"and {self.temperature}"
            )

    @property
    def readouts(self) -> tuple[str, ...]:
        """Every readout to compute, the primary first, each once."""
        return tuple(dict.fromkeys([self.primary, *self.report]))


def expected_confidence(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: Sequence[int],
    completion: str,
    values: Sequence[float] = CANDIDATE_VALUES,
) -> float:
    """E[stated value | prompt, the answer of ``completion``] under ``model`` (the ``expected`` readout).

    Args:
        model: a causal language model (Hugging Face interface), in the mode the caller wants (eval for dropout off).
        tokenizer: its tokenizer.
        prompt: the plain prompt's token ids.
        completion: the greedy completion; its answer is everything before its first confidence key.
        values: the candidate values, each in [0, 1].
    """
    candidates = [revised_completion_ids(tokenizer, completion, value) for value in values]
    probabilities = candidate_log_probs(model, prompt, candidates).softmax(0)
    return float((probabilities * torch.tensor(values, dtype=torch.float64)).sum())


def expected_readouts(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]], texts: Sequence[str]
) -> list[float]:
    """The ``expected`` readout of each (prompt, completion), read in eval mode; ``model`` gets its mode back.

    A completion that states no confidence reads 0, as under every readout, and costs no forward.

    Args:
        model: the causal language model evaluated (sharded with FSDP2 or not).
        tokenizer: its tokenizer.
        prompts: the plain prompts' token ids.
        texts: their greedy completions.
    """
    # Sharded (FSDP2), every forward all-gathers, so ranks must run as many: they do. Every rank evaluates every
    # prompt (no distributed sampler; with one, Lightning's pads ranks to equal counts), and every answer costs
    # exactly two forwards: its candidates end with EOS after the token where they first differ (suffixes >= 2).
    # All ranks read the same texts, so they skip the same forwards.
    training = model.training
    model.eval()  # dropout off: the model's own distribution
    try:
        return [
            expected_confidence(model, tokenizer, p, t) if parse_confidence(t).parsed else 0.0
            for p, t in zip(prompts, texts)
        ]
    finally:
        model.train(training)


@torch.no_grad()
def candidate_log_probs(model: torch.nn.Module, prompt: Sequence[int], candidates: Sequence[list[int]]) -> torch.Tensor:
    """(N,) float64 log P(candidate | prompt) of each token sequence, by teacher forcing.

    The candidates' longest common token prefix runs once with the prompt (its log-probability is the same for all
    and cancels when they are renormalised, so it is not added); the tokens after it run as one right-padded batch
    over the repeated KV cache. Causal attention means padding after a sequence's last token never reaches it.

    Raises:
        ValueError: fewer than two candidates, an empty one, or two that tokenise identically.
    """
    if len(candidates) < 2 or not all(candidates) or len({tuple(c) for c in candidates}) != len(candidates):
        raise ValueError(
            f"candidate_log_probs needs at least two distinct, non-empty candidates; got {len(candidates)} of which "
            f"{len({tuple(c) for c in candidates})} distinct and {sum(not c for c in candidates)} empty"
        )
    shared = _common_prefix_length(candidates)
    device = next(model.parameters()).device
    context = torch.tensor([[*prompt, *candidates[0][:shared]]], device=device)
    out = model(input_ids=context, use_cache=True, logits_to_keep=1)
    first = out.logits[0, -1].float().log_softmax(-1)  # (V,) the distribution of each candidate's first own token
    suffixes = [candidate[shared:] for candidate in candidates]
    scores = first[torch.tensor([suffix[0] for suffix in suffixes], device=device)].double()  # (N,)
    longest = max(len(suffix) for suffix in suffixes)
    if longest > 1:
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(candidates))
        pad = suffixes[0][0]  # any id: it only follows a sequence's last token
        inputs = torch.tensor([s[:-1] + [pad] * (longest - len(s)) for s in suffixes], device=device)  # (N, L-1)
        targets = torch.tensor([s[1:] + [pad] * (longest - len(s)) for s in suffixes], device=device)  # (N, L-1)
        mask = torch.tensor([[i < len(s) - 1 for i in range(longest - 1)] for s in suffixes], device=device)
        logits = model(input_ids=inputs, past_key_values=cache, use_cache=False).logits.float()  # (N, L-1, V)
        picked = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N, L-1)
        scores += (picked * mask).double().sum(-1)
    return scores.cpu()


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    # At most the shortest length - 1: every candidate keeps a token of its own to score, even one that is a prefix
    # of another (its score is then that token's log-probability, not an empty suffix).
    shortest = min(len(s) for s in sequences) - 1
    for index in range(shortest):
        token = sequences[0][index]
        if any(s[index] != token for s in sequences):
            return index
    return shortest


def sampled_confidence(texts: Sequence[str]) -> float:
    """The ``sampled`` readout of one prompt: the mean value its sampled completions state, a sample that states
    none counting 0 (0 for no samples)."""
    values = [stated.value if stated.parsed else 0.0 for stated in map(parse_confidence, texts)]
    return sum(values) / len(values) if values else 0.0


def with_readout(records: Sequence[Mapping[str, Any]], readout: str) -> list[dict[str, Any]]:
    """``records`` with ``confidence`` taken from their ``readouts[readout]`` (metrics read ``confidence``).

    Raises:
        KeyError: a record lacks that readout (it was not in ``model.readout.report``).
    """
    out = []
    for record in records:
        readouts = record.get("readouts", {})
        if readout not in readouts:
            raise KeyError(f"record {record.get('id')!r} has no {readout!r} readout (it has {sorted(readouts)})")
        out.append({**record, "confidence": readouts[readout]})
    return out


def summaries_by_readout(
    records: Sequence[Mapping[str, Any]], readouts: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """{readout: :func:`~caopd_pl.metrics.calibration_summary` of ``records`` read with it}, for ``readouts``
    (default: every readout all the records carry, :func:`available_readouts`)."""
    names = available_readouts(records) if readouts is None else readouts
    return {name: calibration_summary(*answer_tensors(with_readout(records, name))) for name in names}


def available_readouts(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The readouts every record carries, in :data:`READOUTS` order ([] for records written before readouts)."""
    if not records:
        return []
    common = set.intersection(*(set(record.get("readouts", {})) for record in records))
    return [name for name in READOUTS if name in common]
