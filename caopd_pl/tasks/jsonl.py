"""A task from rows in the project's own format: math and code problems (or anything a verifier can judge).

One JSON object per line (JSONL; the same columns also load from Parquet, a ``datasets`` folder or the hub)::

    {"id": "gsm8k-17", "prompt": "What is 3 + 4?", "answer": "7", "demonstration": "3 + 4 = 7. \\\\boxed{7}"}
    {"prompt": "Write add(a, b).", "reference": {"test": "assert add(1, 2) == 3", "entry_point": "add"}}

Fields:

- ``prompt`` (the question, a string) or ``messages`` (chat messages); an optional ``system`` string is prepended;
- ``reference`` (whatever the verifier reads: a code reference dict, a golden call list, ...) or ``answer`` (a math
  answer, a letter, a number);
- ``demonstration`` (optional): a golden response without a confidence line, for the teacher's ``demo`` template;
- ``id`` (optional; default ``<split>:<line index>``); every other field goes to ``meta``.

The verifier is named by the task (``math``, ``code``, ...), not by the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caopd_pl.confidence import strip_confidence
from caopd_pl.files import read_jsonl
from caopd_pl.tasks.base import TaskExample
from caopd_pl.tasks.science import parse_messages
from caopd_pl.tasks.sources import FileTask

_KNOWN = ("prompt", "messages", "system", "reference", "answer", "demonstration", "id")
_PROMPT_FIELDS = ("prompt", "messages", "system", "id")


class JsonlTask(FileTask):
    """Problems in the JSONL format of the module docstring, judged by the named verifier (default ``math``)."""

    default_verifier = "math"

    def example(self, row: dict[str, Any], default_id: str) -> TaskExample:
        return jsonl_example(row, default_id)


def jsonl_example(row: dict[str, Any], default_id: str) -> TaskExample:
    """One row as a :class:`TaskExample`.

    Raises:
        ValueError: the row has no ``prompt``/``messages`` or no ``reference``/``answer`` (the message names the row).
    """
    if "prompt" not in row and "messages" not in row:
        raise ValueError(f"row {row.get('id', default_id)}: needs 'prompt' or 'messages'; it has {sorted(row)}")
    if "reference" not in row and "answer" not in row:
        raise ValueError(f"row {row.get('id', default_id)}: needs 'reference' or 'answer'; it has {sorted(row)}")
    messages = parse_messages(row["messages"] if "messages" in row else row["prompt"])
    if isinstance(row.get("system"), str):
        messages = [{"role": "system", "content": row["system"]}, *messages]
    demonstration = row.get("demonstration")
    return TaskExample(
        messages=messages,
        reference=row["reference"] if "reference" in row else row["answer"],
        demonstration=strip_confidence(demonstration) if isinstance(demonstration, str) else None,
        id=str(row.get("id", default_id)),
        meta={k: v for k, v in row.items() if k not in _KNOWN},
    )


def read_prompts(path: str | Path) -> list[TaskExample]:
    """The prompts of a JSONL file for ``predict`` (``data.predict_prompts``): no reference, no demonstration.

    Each line is ``{"prompt": "..."}`` or ``{"messages": [{"role": ..., "content": ...}, ...]}``, with an optional
    ``system`` string (prepended as a system message) and ``id`` (default ``prompts:<line index>``); every other field
    goes to ``meta`` and so into the predictions. The examples' ``reference`` is None: nothing judges them.

    Raises:
        ValueError: a line is not a JSON object, or has no ``prompt``/``messages`` (the message names the file, the
            line and the fix).
    """
    examples = []
    for index, row in enumerate(read_jsonl(Path(path))):
        if "prompt" not in row and "messages" not in row:
            raise ValueError(
                f"{path}:{index + 1}: a prompt row needs 'prompt' (a string) or 'messages' (chat messages); it has "
                f"{sorted(row)}"
            )
        messages = parse_messages(row["messages"] if "messages" in row else row["prompt"])
        if isinstance(row.get("system"), str):
            messages = [{"role": "system", "content": row["system"]}, *messages]
        meta = {key: value for key, value in row.items() if key not in _PROMPT_FIELDS}
        examples.append(TaskExample(messages, None, id=str(row.get("id", f"prompts:{index}")), meta=meta))
    return examples
