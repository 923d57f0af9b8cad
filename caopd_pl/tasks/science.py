"""Science Q&A (the CaOPD paper's chemistry multiple choice over SMILES, SciKnowEval), judged by ``chemistry``.

Row formats accepted (both as released with the paper):

- ``messages`` (chat messages) and ``output_text`` (a golden response: the teacher's demonstration), as in the
  released *training* split, with the option letter inside ``output_text``'s ``<answer>...</answer>``; an
  ``answer`` column, when present and not blank, takes precedence;
- ``prompt`` (chat messages, their Python-repr string as some releases store them, or a plain question) and
  ``answer``, as in the released evaluation split.

The reference is the ``answer`` letter, else the letter inside the demonstration's last ``<answer>...</answer>``
before its confidence (read by the chemistry verifier's own :func:`~caopd_pl.verifiers.chemistry.extract_tagged_answer`,
so "the answer of a text" has one definition); a row with a ``smiles`` column is judged as a SMILES answer instead.
The reference code reads ``answer`` only, so on the training split its reference is empty and every rollout is
judged wrong (P_acc always 0). Trailing assistant messages are dropped from the prompt (the last one becomes the
demonstration when there is no ``output_text``). Repr strings are parsed with ``ast.literal_eval``, never ``eval``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from caopd_pl.confidence import strip_confidence
from caopd_pl.tasks.base import Message, TaskExample
from caopd_pl.tasks.sources import FileTask
from caopd_pl.verifiers.chemistry import extract_tagged_answer

_OPTION_LETTER = re.compile(r"[A-Za-z]")


def parse_messages(value: Any) -> list[Message]:
    """Chat messages from a list, its Python-repr / JSON string, or a plain question string.

    Raises:
        ValueError: a list whose items are not ``{"role", "content"}`` messages.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return [{"role": "user", "content": value}]
        else:
            return [{"role": "user", "content": value}]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        raise ValueError(f"prompt must be chat messages [{{'role', 'content'}}, ...] or a string, got {value!r:.200}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def split_demonstration(messages: list[Message]) -> tuple[list[Message], str | None]:
    """The prompt without trailing assistant messages, and the last of those (or None)."""
    demonstration = None
    while messages and messages[-1]["role"] == "assistant":
        demonstration = demonstration or messages[-1]["content"]
        messages = messages[:-1]
    return messages, demonstration


class ScienceTask(FileTask):
    """Chemistry multiple choice (the paper's science split, or any file in its format), judged by ``chemistry``.

    ``chemistry``, used unless ``verifier`` names another, scores the last ``<answer>`` letter as the paper does.
    """

    default_verifier = "chemistry"

    def example(self, row: dict[str, Any], default_id: str) -> TaskExample:
        return science_example(row, default_id)


def science_example(row: dict[str, Any], default_id: str) -> TaskExample:
    """One science row as a :class:`TaskExample`.

    Raises:
        ValueError: the row has neither ``messages`` nor ``prompt``, or no reference: no ``smiles``, no ``answer``
            and no option letter in its demonstration's ``<answer>`` (the message names the row).
    """
    row_id = str(row.get("id", default_id))
    if "messages" not in row and "prompt" not in row:
        raise ValueError(f"science row {row_id}: needs 'messages' or 'prompt'; it has {sorted(row)}")
    messages, demonstration = split_demonstration(parse_messages(row.get("messages", row.get("prompt"))))
    if isinstance(row.get("output_text"), str):
        demonstration = row["output_text"]
    demonstration = strip_confidence(demonstration) if demonstration else None
    extra = {k: v for k, v in row.items() if k not in ("messages", "prompt", "output_text", "answer", "smiles")}
    return TaskExample(
        messages=messages,
        reference=science_reference(row, demonstration, row_id),
        demonstration=demonstration,
        id=row_id,
        meta=extra,
    )


def science_reference(row: dict[str, Any], demonstration: str | None, row_id: str) -> Any:
    """``{"smiles": ...}``, the ``answer`` letter, or the letter the demonstration answers (see the module docstring).

    Raises:
        ValueError: none of the three is there (the message names the row and what it holds).
    """
    if isinstance(row.get("smiles"), str):
        return {"smiles": row["smiles"]}
    if isinstance(row.get("answer"), str) and row["answer"].strip():
        return row["answer"].strip()
    tagged = extract_tagged_answer(demonstration) if demonstration else None
    if tagged is not None and _OPTION_LETTER.fullmatch(tagged):
        return tagged.upper()
    found = f"its demonstration's <answer> holds {tagged[:50]!r}" if tagged is not None else "no <answer> tag"
    raise ValueError(
        f"science row {row_id}: no reference: needs an 'answer' letter, a 'smiles' string, or an option letter in "
        f"output_text's <answer>...</answer>; it has columns {sorted(row)} and {found}"
    )
