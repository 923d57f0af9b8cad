"""Steps 2-4 of CaOPD on verified rollouts: P_acc per prompt, each teacher's evidence, the distillation examples.

Given a prompt's K rollouts and their verdicts (steps 1-2, sampled and verified by
:class:`caopd_pl.datamodule.RolloutDataModule`):

3. P_acc = the estimated success rate of the prompt (:func:`caopd_pl.calibration.estimate_success_rate`);
4. each completion gets the evidence its teacher sees (:func:`evidence_for`: the golden demonstration, or another
   verified-correct rollout of its group), and with ``calibration: empirical`` the completion and the teacher's
   evidence state P_acc, the teacher's prompt also carries the note (:mod:`caopd_pl.templates`); with ``none``
   (plain SDFT/OPD) the sampled tokens are kept and the evidence states its own confidence.

The result is one :class:`DistillExample` per completion that has evidence. Everything here is a pure function of
plain data (texts, token ids, booleans) and the tokenizer: no torch, no Lightning, no engine, so it is tested with
hand-written rollouts (``tests/test_revision.py``) and importable where torch is not.

``correct_solution`` shows, by default, another correct rollout of the group, never the completion itself (see
:func:`evidence_for`), as the paper describes it; the reference code's mode of that name shows the golden
demonstration under the same header (``data.teacher.evidence: demonstration``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from caopd_pl.calibration import EstimatorConfig, estimate_success_rate
from caopd_pl.confidence import parse_confidence, strip_confidence
from caopd_pl.tasks.base import TaskExample
from caopd_pl.templates import TeacherConfig, TemplateName, prompt_ids, revised_completion_ids, teacher_messages

if TYPE_CHECKING:  # rollout.base imports torch; revision only reads a rollout's text and token ids
    from caopd_pl.rollout.base import Rollout

Calibration = Literal["empirical", "none"]
DEMONSTRATION = -1
"""The evidence source of the golden demonstration (rollouts are 0..K-1)."""


@dataclass
class DistillExample:
    """One training example: a (revised) completion under two prompts."""

    student_prompt: list[int]
    teacher_prompt: list[int]
    completion: list[int]
    p_acc: float = float("nan")
    """The target confidence (for logs)."""
    rollout: int = 0
    """The index of the completion's rollout in its prompt's group (inspection maps examples back to rollouts)."""


@dataclass(frozen=True)
class RevisionSettings:
    """How rollouts become distillation examples (the ``data.*`` settings revision reads)."""

    calibration: Calibration = "empirical"
    """``empirical`` (CaOPD: completions and evidence state P_acc) or ``none`` (SDFT/OPD: both keep their own)."""
    teacher: TeacherConfig = TeacherConfig()
    """The teacher's template and its fallback."""
    estimator: EstimatorConfig = EstimatorConfig()
    """How P_acc is estimated from the K verdicts."""
    max_completion_tokens: int | None = None
    """Cap on a revised completion, EOS included (the rollouts' ``max_new_tokens``); None: no cap."""


@dataclass(frozen=True)
class Evidence:
    """What a teacher prompt shows: a demonstration or a correct rollout."""

    text: str
    stated: float
    """The confidence it states (the teacher's value under ``calibration: none``)."""
    template: TemplateName
    source: int
    """The rollout's index in its group, or :data:`DEMONSTRATION`."""


def revise_epoch(
    tokenizer,
    examples: Sequence[TaskExample],
    student_prompts: Sequence[list[int]],
    rollouts: Sequence[Sequence[Rollout]],
    correct: Sequence[Sequence[bool]],
    settings: RevisionSettings,
) -> list[DistillExample]:
    """The distillation examples of a batch of prompts, in prompt order, then rollout order.

    Args:
        tokenizer: the student's tokenizer (teacher prompts and revised completions are tokenised with it).
        examples: the task examples.
        student_prompts: their plain prompts' token ids (what the rollouts were sampled from).
        rollouts: the K rollouts of each prompt.
        correct: each rollout's verdict, grouped like ``rollouts``.
        settings: calibration, teacher template, estimator, completion cap.
    """
    result: list[DistillExample] = []
    for example, student_prompt, group, verdicts in zip(examples, student_prompts, rollouts, correct):
        result += revise_group(tokenizer, example, student_prompt, group, verdicts, settings)
    return result


def revise_group(
    tokenizer,
    example: TaskExample,
    student_prompt: list[int],
    group: Sequence[Rollout],
    correct: Sequence[bool],
    settings: RevisionSettings,
) -> list[DistillExample]:
    """The distillation examples of one prompt: one per completion that has evidence (see :func:`evidence_for`).

    With ``calibration: empirical`` every completion is revised to state P_acc (capped at
    ``settings.max_completion_tokens``, EOS included: the body is trimmed, the confidence line kept) and the
    teacher's evidence states P_acc; with ``none`` the sampled tokens are kept and the evidence states its own
    confidence. Teacher prompts are tokenised once per distinct evidence.
    """
    p_acc = estimate_success_rate(sum(correct), len(group), settings.estimator)
    empirical = settings.calibration == "empirical"
    teacher_prompts: dict[int, list[int]] = {}  # evidence source -> teacher prompt ids
    examples = []
    for index, rollout in enumerate(group):
        evidence = evidence_for(example, group, correct, index, settings.teacher)
        if evidence is None:
            continue
        if evidence.source not in teacher_prompts:
            teacher_prompts[evidence.source] = teacher_prompt(tokenizer, example, evidence, p_acc, settings)
        completion = (
            revised_completion_ids(tokenizer, rollout.text, p_acc, settings.max_completion_tokens)
            if empirical
            else rollout.token_ids
        )
        examples.append(DistillExample(student_prompt, teacher_prompts[evidence.source], completion, p_acc, index))
    return examples


def teacher_prompt(
    tokenizer, example: TaskExample, evidence: Evidence, p_acc: float, settings: RevisionSettings
) -> list[int]:
    """Token ids of the teacher's privileged prompt: the student's chat with ``evidence`` (and the note) added."""
    empirical = settings.calibration == "empirical"
    messages = teacher_messages(
        example.student_messages(),
        evidence.text,
        p_acc if empirical else evidence.stated,
        evidence.template,
        note=empirical and settings.teacher.note,
    )
    return prompt_ids(tokenizer, messages)


def evidence_for(
    example: TaskExample, group: Sequence[Rollout], correct: Sequence[bool], index: int, teacher: TeacherConfig
) -> Evidence | None:
    """What completion ``index``'s teacher sees; None drops the completion.

    ``demo``, and ``correct_solution`` with ``evidence: demonstration`` (the reference code's mode): the golden
    demonstration (stating 1.00, as the paper's do). ``correct_solution`` with ``evidence: rollout``: another correct
    rollout of the group whose answer (the text before its confidence line) differs from this completion's: a
    teacher that reads its own target predicts it by copying, and the loss would then teach copying rather than the
    solution, and two rollouts often say the same thing word for word (short answers, low temperatures), so the
    choice is by content, not by position. It is the next such rollout after ``index`` (cyclically), so the teachers
    spread over the group. A completion with no such rollout (none is correct, or every other correct one says the
    same) follows ``teacher.no_correct_rollout``, as a prompt without a correct rollout does: the
    demonstration (legitimate privileged context, not a copy of the target), or dropped (``skip``), which costs that
    one of the K examples; P_acc still counts it.

    Raises:
        ValueError: the demonstration is needed and the example has none.
    """
    if teacher.template == "correct_solution" and teacher.evidence == "demonstration":
        if example.demonstration is None:
            raise ValueError(
                f"data.teacher.evidence='demonstration' needs a demonstration, but task example {example.id!r} has none"
            )
        return Evidence(example.demonstration, 1.0, "correct_solution", DEMONSTRATION)
    if teacher.template == "correct_solution":
        source = next_correct(correct, index, [strip_confidence(rollout.text) for rollout in group])
        if source is not None:
            stated = parse_confidence(group[source].text)
            return Evidence(group[source].text, stated.value if stated.parsed else 1.0, "correct_solution", source)
        if teacher.no_correct_rollout == "skip":
            return None
    if example.demonstration is None:
        raise ValueError(
            f"teacher.template={teacher.template!r} needs a demonstration, but task example {example.id!r} "
            "has none; use teacher.template: correct_solution with no_correct_rollout: skip"
        )
    return Evidence(example.demonstration, 1.0, "demo", DEMONSTRATION)


def next_correct(correct: Sequence[bool], index: int, bodies: Sequence[str] | None = None) -> int | None:
    """The first correct rollout after ``index``, cyclically, other than ``index`` itself and, given ``bodies`` (each
    rollout's answer text), saying something else than ``bodies[index]``; None when there is none."""
    count = len(correct)
    candidates = (j % count for j in range(index + 1, index + count) if correct[j % count])
    return next((j for j in candidates if bodies is None or bodies[j] != bodies[index]), None)
