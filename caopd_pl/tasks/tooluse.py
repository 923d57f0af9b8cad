"""Tool use (ToolAlpaca-style single tool call, as in the CaOPD paper), judged by ``tooluse``.

Row format: ``prompt`` (the full ReAct prompt, ending ``Begin!\\nQuestion: ...``), ``golden_answer`` (the list of
golden calls ``[{"Action", "Action_Input"}]``, or its Python-repr string), and optionally ``golden_response`` (a golden
``Thought/Action/Action Input`` response: the teacher's demonstration), a string or, as in the paper's released
training split, a list of strings (its lines), joined with new lines as the reference code joins them. Without a
``golden_response`` (or with a blank one) the demonstration is the first golden call written as
``Action: ...\\nAction Input: ...``. Other columns (``name``, ``description``, ``instruction``, ...) are kept in
``meta``.
"""

from __future__ import annotations

import ast
from typing import Any

from caopd_pl.confidence import strip_confidence
from caopd_pl.tasks.base import TaskExample
from caopd_pl.tasks.science import parse_messages
from caopd_pl.tasks.sources import FileTask


def parse_golden(value: Any) -> list[dict[str, Any]]:
    """The golden call list from a list or its Python-repr string (``ast.literal_eval``, never ``eval``).

    Raises:
        ValueError: not a non-empty list of ``{"Action", "Action_Input"}`` dicts.
    """
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            raise ValueError(f"golden_answer is not a Python literal: {value!r:.200}") from err
    if isinstance(value, dict):
        value = [value]
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(call, dict) and isinstance(call.get("Action"), str) for call in value)
    ):
        raise ValueError(f"golden_answer must be a non-empty list of {{'Action', 'Action_Input'}}, got {value!r:.200}")
    return [dict(call) for call in value]


def demonstration_of(golden: list[dict[str, Any]]) -> str:
    """The first golden call in the response format the prompt asks for."""
    first = golden[0]
    return f"Action: {first['Action']}\nAction Input: {first.get('Action_Input') or '{}'}"


class ToolUseTask(FileTask):
    """Single-call tool use (the paper's tooluse split, or any file in its format), judged by ``tooluse``.

    ``tooluse``, used unless ``verifier`` names another, compares the first call with the first golden call.
    """

    default_verifier = "tooluse"

    def example(self, row: dict[str, Any], default_id: str) -> TaskExample:
        return tooluse_example(row, default_id)


def tooluse_example(row: dict[str, Any], default_id: str) -> TaskExample:
    """One tool-use row as a :class:`TaskExample`.

    Raises:
        ValueError: the row lacks ``prompt`` or a valid ``golden_answer``.
    """
    row_id = str(row.get("id", default_id))
    if "prompt" not in row or "golden_answer" not in row:
        raise ValueError(f"tool-use row {row_id}: needs 'prompt' and 'golden_answer'; it has {sorted(row)}")
    golden = parse_golden(row["golden_answer"])
    response = golden_response_text(row.get("golden_response"), row_id)
    demonstration = response if response.strip() else demonstration_of(golden)
    extra = {k: v for k, v in row.items() if k not in ("prompt", "golden_answer", "golden_response")}
    return TaskExample(
        messages=parse_messages(row["prompt"]),
        reference=golden,
        demonstration=strip_confidence(demonstration),
        id=row_id,
        meta=extra,
    )


def golden_response_text(value: Any, row_id: str) -> str:
    """The ``golden_response`` column as one text: a string as it is, a list of strings joined with new lines.

    Returns:
        ``""`` when the column is missing or null (the caller then writes the first golden call).

    Raises:
        ValueError: any other type, or a list holding a non-string (the message names the column and the row).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        wrong = next((item for item in value if not isinstance(item, str)), None)
        if wrong is None:
            return "\n".join(value)
        raise ValueError(
            f"tool-use row {row_id}: golden_response must be a string or a list of strings; it holds "
            f"{type(wrong).__name__} {wrong!r:.100}"
        )
    raise ValueError(
        f"tool-use row {row_id}: golden_response must be a string or a list of strings, got "
        f"{type(value).__name__} {value!r:.100}"
    )
