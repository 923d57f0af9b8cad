"""What an epoch's rollouts looked like: one readable record per sampled completion.

Each epoch the datamodule samples K completions per prompt, verifies them, estimates P_acc and revises them into
distillation examples (:mod:`caopd_pl.revision`). :class:`EpochTrace` keeps that material for the epoch, and
:func:`rollout_records` turns it into one dict per rollout, as text:

``epoch``, ``prompt_id``, ``rollout`` (its index among the prompt's K), ``prompt`` (what the student read, the chat
template and the confidence instruction included), ``reference``, ``completion`` (the sampled text), ``correct``
(the verifier's verdict), ``stated_confidence`` (parsed from the completion; None when it states none), ``p_acc``,
``revised_completion`` (the distillation target, special tokens included: what the student learns to write),
``teacher_prompt`` (the privileged prompt the teacher read); ``revised_completion`` and ``teacher_prompt`` are None
for a completion the revision dropped (no evidence for its teacher). RL epochs (``data.rl``) have no revision: their
records carry ``reward`` and ``advantage`` instead.

No Lightning here: :class:`caopd_pl.callbacks.InspectRollouts` writes the records each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caopd_pl.calibration import EstimatorConfig, estimate_success_rate
from caopd_pl.confidence import parse_confidence
from caopd_pl.revision import DistillExample
from caopd_pl.tasks.base import TaskExample

if TYPE_CHECKING:
    from caopd_pl.grpo import PolicyExample
    from caopd_pl.rollout.base import Rollout

TABLE_COLUMNS = (
    "epoch",
    "prompt_id",
    "rollout",
    "prompt",
    "completion",
    "correct",
    "stated_confidence",
    "p_acc",
    "revised_completion",
    "teacher_prompt",
)
"""The columns of the completions table the loggers get (the JSONL records hold these and a few more)."""


@dataclass
class EpochTrace:
    """What one epoch sampled on one rank, kept so that it can be shown: prompts, rollouts, verdicts, examples."""

    epoch: int
    prompts: list[TaskExample]
    student_prompts: list[list[int]]
    """The plain prompts' token ids, one per prompt."""
    rollouts: list[list[Rollout]]
    """The K rollouts of each prompt."""
    verdicts: list[list[bool]]
    """Each rollout's verdict, grouped like ``rollouts``."""
    examples: list[list[DistillExample]] | list[list[PolicyExample]]
    """Each prompt's training examples: its distillation examples (one per rollout the revision kept), or with
    ``data.rl`` one policy example per rollout, in rollout order."""
    estimator: EstimatorConfig = EstimatorConfig()
    """How P_acc was estimated (a prompt whose completions were all dropped still gets its value)."""


def rollout_records(tokenizer, trace: EpochTrace, prompts: int | None = None) -> list[dict[str, Any]]:
    """One record per rollout of the first ``prompts`` prompts of ``trace`` (all when None), as the module docstring
    lists them; the epoch's prompts are a seeded random draw, so the first ``prompts`` are a random sample."""
    count = len(trace.prompts) if prompts is None else min(prompts, len(trace.prompts))
    by_prompt = _examples_by_prompt(trace)
    records = []
    for index in range(count):
        example, group, verdicts = trace.prompts[index], trace.rollouts[index], trace.verdicts[index]
        p_acc = estimate_success_rate(sum(verdicts), len(group), trace.estimator)
        shared = {
            "epoch": trace.epoch,
            "prompt_id": example.id,
            "prompt": tokenizer.decode(trace.student_prompts[index]),
            "reference": example.reference,
            "p_acc": p_acc,
        }
        for position, (rollout, correct) in enumerate(zip(group, verdicts)):
            trained = by_prompt[index].get(position)
            records.append(_record(tokenizer, shared, position, rollout, correct, trained))
    return records


def _record(
    tokenizer, shared: dict[str, Any], position: int, rollout: Rollout, correct: bool, trained: Any
) -> dict[str, Any]:
    stated = parse_confidence(rollout.text)
    record = {
        **shared,
        "rollout": position,
        "completion": rollout.text,
        "correct": bool(correct),
        "stated_confidence": stated.value if stated.parsed else None,
    }
    if trained is None or isinstance(trained, DistillExample):
        record["revised_completion"] = None if trained is None else tokenizer.decode(trained.completion)
        record["teacher_prompt"] = None if trained is None else tokenizer.decode(trained.teacher_prompt)
    else:  # a policy example: the sampled tokens are trained as they are
        record |= {"revised_completion": None, "teacher_prompt": None}
        record |= {"reward": trained.reward, "advantage": trained.advantage}
    return record


def _examples_by_prompt(trace: EpochTrace) -> list[dict[int, Any]]:
    """For each prompt, {rollout index: the training example made from that rollout}."""
    return [
        {example.rollout: example for example in group}
        if all(isinstance(example, DistillExample) for example in group)
        else dict(enumerate(group))  # policy examples: one per rollout, in order
        for group in trace.examples
    ]
