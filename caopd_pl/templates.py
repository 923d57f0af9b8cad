"""Step 4 of CaOPD: the revised student completion and the teacher's privileged prompt.

The teacher prompt is the student's chat with the message that holds the question (the last user message)
rewritten by one of the paper's templates (appendix C.3); every other message (a system prompt, earlier turns) is
kept. The reference code instead keeps only the *first* message, which drops the question when a chat starts with a
system message; we do not.

  * ``demo``: ``{question}\\n\\nThis is an example for a response to the question:\\n{demonstration}\\nConfidence: {c}
    \\n\\n[note\\n\\n]Now answer with a response of your own, including the thinking process.``
  * ``correct_solution``: the same shape with ``Correct solution:`` and one of the student's own verified-correct
    rollouts, closing with ``Correctly solve the original question.``

With ``calibration: empirical`` the confidence c is the estimated P_acc and the note "Note: The empirical confidence
for this question is {c}. Output this exact value in the 'Confidence:' field." is inserted before the closing line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from caopd_pl.confidence import format_confidence, strip_confidence
from caopd_pl.tasks.base import Message, last_user_index

TemplateName = Literal["demo", "correct_solution"]

_TEMPLATES: dict[str, tuple[str, str]] = {
    "demo": (
        "This is an example for a response to the question:",
        "Now answer with a response of your own, including the thinking process.",
    ),
    "correct_solution": ("Correct solution:", "Correctly solve the original question."),
}
NOTE = (
    "Note: The empirical confidence for this question is {value:.2f}. "
    "Output this exact value in the 'Confidence:' field."
)


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher's privileged prompt is built."""

    template: TemplateName = "demo"
    """``demo`` (a golden demonstration, SDFT style) or ``correct_solution`` (a verified rollout, SDPO style)."""
    note: bool = True
    """With empirical calibration, add the note that states the target confidence."""
    no_correct_rollout: Literal["demo", "skip"] = "demo"
    """``correct_solution`` when no rollout of a prompt is correct: use the demonstration, or skip the prompt."""


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


def revised_completion_ids(tokenizer, completion: str, confidence: float) -> list[int]:
    """Token ids of ``completion`` with its confidence replaced by ``confidence``, ending with EOS."""
    text = f"{strip_confidence(completion)}\n{format_confidence(confidence)}"
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def prompt_ids(tokenizer, messages: list[Message]) -> list[int]:
    """Token ids of a chat prompt, ending with the assistant turn's opening."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
