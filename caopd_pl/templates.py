"""Step 4 of CaOPD: the revised student completion and the teacher's privileged prompt.

The teacher prompt is the student's chat with the message that holds the question (the last user message)
rewritten by one of the paper's templates (appendix C.3); every other message (a system prompt, earlier turns) is
kept. The reference code instead keeps only the *first* message, which drops the question when a chat starts with a
system message; we do not.

  * ``demo``: ``{question}\\n\\nThis is an example for a response to the question:\\n{demonstration}\\nConfidence: {c}
    \\n\\n[note\\n\\n]Now answer with a response of your own, including the thinking process.``
  * ``correct_solution``: the same shape with ``Correct solution:``, closing with ``Correctly solve the original
    question.`` Under the header, by ``evidence``: one of the student's own verified-correct rollouts (``rollout``,
    the default, as the paper describes it, appendix C.3), never the completion being distilled (the teacher would
    then read its target), so teacher prompts differ per completion (:func:`caopd_pl.revision.evidence_for` chooses
    them); or the golden demonstration (``demonstration``: what the reference code's ``correct_solution`` mode
    shows, its teacher prompts being built when the data is loaded).

With ``calibration: empirical`` the confidence c is the estimated P_acc and the note "Note: The empirical confidence
for this question is {c}. Output this exact value in the 'Confidence:' field." is inserted before the closing line.

The revised completion (:func:`revised_completion_ids`) is the completion before its first confidence key (see
:mod:`caopd_pl.confidence`), a new line ``Confidence: {P_acc:.2f}`` and EOS, capped at the generation length as the
reference caps it: the body is trimmed, the confidence line and EOS are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from caopd_pl.confidence import format_confidence, strip_confidence
from caopd_pl.tasks.base import Message, last_user_index

TemplateName = Literal["demo", "correct_solution"]
_REPLACEMENT_CHARACTER = "\ufffd"

_TEMPLATES: dict[str, tuple[str, str]] = {
    "demo": (
        "This is an example for a response to the question:",
        "Now answer with a response of your own, including the thinking process.",
    ),
    "correct_solution": ("Correct solution:", "Correctly solve the original question."),
}
NOTE_OPENING = "Note: The empirical confidence for this question is"
NOTE_CLOSING = "Output this exact value in the 'Confidence:' field."
NOTE = f"{NOTE_OPENING} {{value:.2f}}. {NOTE_CLOSING}"
SENTENCES = (*(sentence for pair in _TEMPLATES.values() for sentence in pair), NOTE_OPENING, NOTE_CLOSING)
"""The fixed sentences of the teacher templates and the note, defined once (the tiny tokenizer makes each a token)."""


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher's privileged prompt is built."""

    template: TemplateName = "demo"
    """``demo`` (a golden demonstration, SDFT style) or ``correct_solution`` (under a "Correct solution:" header, SDPO
    style; what it shows is ``evidence``)."""
    evidence: Literal["rollout", "demonstration"] = "rollout"
    """With ``correct_solution``: ``rollout``, another verified-correct rollout of the same group that says something
    else than the completion (never the completion itself; the paper's description), or ``demonstration``, the golden
    demonstration (the reference code's ``correct_solution`` mode)."""
    note: bool = True
    """With empirical calibration, add the note that states the target confidence."""
    no_correct_rollout: Literal["demo", "skip"] = "demo"
    """``correct_solution`` when a completion has no *other* correct rollout to show: use the demonstration, or skip
    (the whole prompt when none of its rollouts is correct; only that completion when it is the group's one correct
    rollout)."""

    def __post_init__(self) -> None:
        if self.evidence not in ("rollout", "demonstration"):
            raise ValueError(f"data.teacher.evidence must be 'rollout' or 'demonstration', got {self.evidence!r}")


def teacher_messages(
    messages: list[Message], evidence: str, confidence: float, template: TemplateName, note: bool
) -> list[Message]:
    """The teacher's chat: ``messages`` with the question's message rewritten by ``template``.

    Args:
        messages: the student's chat (the question in the last user message).
        evidence: the demonstration or correct rollout; any confidence line in it is replaced by ``confidence``.
        confidence: the value written after the evidence (and in the note).
        template: ``demo`` or ``correct_solution``.
        note: whether to insert the empirical-confidence note before the closing instruction.
    """
    if template not in _TEMPLATES:
        raise ValueError(f"teacher.template must be one of {sorted(_TEMPLATES)}, got {template!r}")
    intro, closing = _TEMPLATES[template]
    index = last_user_index(messages)
    parts = [messages[index]["content"], f"{intro}\n{strip_confidence(evidence)}\n{format_confidence(confidence)}"]
    if note:
        parts.append(NOTE.format(value=confidence))
    parts.append(closing)
    edited = dict(messages[index], content="\n\n".join(parts))
    return [*messages[:index], edited, *messages[index + 1 :]]


def revised_completion_ids(tokenizer, completion: str, confidence: float, max_tokens: int | None = None) -> list[int]:
    """Token ids of ``completion`` with its confidence replaced by ``confidence``, ending with EOS.

    Args:
        tokenizer: the student's tokenizer.
        completion: the sampled completion's text.
        confidence: the target confidence, written as the last line.
        max_tokens: the longest result, EOS included (the generation length, as the reference caps it); None: no cap.
            An over-long result keeps its confidence line and EOS and loses the end of its body, cut at a token
            boundary and re-tokenised so that the ids are the tokenizer's own encoding of the text they decode to.
            When even an empty body does not fit, the result is the confidence line and EOS alone.
    """
    body, line = strip_confidence(completion), format_confidence(confidence)
    ids = _encode(tokenizer, f"{body}\n{line}")
    if max_tokens is not None and len(ids) + 1 > max_tokens:
        ids = _capped_ids(tokenizer, body, line, max_tokens - 1)
    return ids + [tokenizer.eos_token_id]


def _capped_ids(tokenizer, body: str, line: str, budget: int) -> list[int]:
    # Cut the body's tokens by the excess and re-encode until body + line fits in `budget` tokens; each round keeps
    # at least one token fewer, so it ends. Decoding a cut multi-byte character yields U+FFFD, which is dropped.
    body_ids = _encode(tokenizer, body)
    keep = budget - len(_encode(tokenizer, f"\n{line}"))
    while keep > 0:
        kept = tokenizer.decode(body_ids[:keep], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        kept = kept.rstrip(_REPLACEMENT_CHARACTER).rstrip()
        ids = _encode(tokenizer, f"{kept}\n{line}")
        if len(ids) <= budget:
            return ids
        keep -= max(len(ids) - budget, 1)
    return _encode(tokenizer, f"\n{line}")


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer, messages: list[Message]) -> list[int]:
    """Token ids of a chat prompt, ending with the assistant turn's opening."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
