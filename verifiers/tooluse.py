"""Tool-use verifier: the first tool call of the completion against the first golden call (the paper's training
verifier).

The completion follows the ToolAlpaca/ReAct format ``Thought: ... Action: name Action Input: {json}``. The call is the
first ``Action:`` name and the first JSON object after the first ``Action Input:``, read in the completion without its
confidence (the base class strips it before ``verify``, so a verdict never depends on the confidence part; the paper
reads the whole text, which differs only for a call written after a confidence key). It is correct when the name equals
the golden first ``Action`` and the arguments equal the golden ``Action_Input`` after JSON normalisation (key order and
spacing ignored; the golden input may be a JSON string or an object; an empty golden input matches ``{}``).

Reference: the golden list ``[{"Action": "getX", "Action_Input": "{\\"a\\": 1}"}, ...]`` (only the first call counts),
a single such dict, or the Python-repr string of the list as some releases store it (parsed by
``ast.literal_eval``, never ``eval``).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from caopd_pl.verifiers.base import Verdict, Verifier

_ACTION = re.compile(r"Action:[ \t]{0,16}([^\n]{0,200})")
_ACTION_INPUT = re.compile(r"Action Input:[ \t]{0,16}")
MAX_INPUT_CHARS = 100_000


def extract_tool_call(completion: str) -> tuple[str | None, Any]:
    """``(name, arguments)`` of the first call; either is None when missing or unparsable. Never raises."""
    if not isinstance(completion, str):
        return None, None
    action = _ACTION.search(completion)
    name = action.group(1).strip().strip("`*").strip() or None if action else None
    start = _ACTION_INPUT.search(completion)
    if start is None:
        return name, None
    text = completion[start.end() : start.end() + MAX_INPUT_CHARS]
    brace = text.find("{")
    if brace < 0 or text[:brace].strip(" \t\n`json"):
        return name, None
    try:
        arguments, _ = json.JSONDecoder().raw_decode(text, brace)
    except (ValueError, RecursionError):
        return name, None
    return name, arguments if isinstance(arguments, dict) else None


def golden_call(reference: Any) -> tuple[str, dict]:
    """The first golden call as ``(name, arguments)``.

    Raises:
        ValueError: the reference is not a golden list / dict (or its repr string), or its input is not a JSON object.
    """
    if isinstance(reference, str):
        reference = ast.literal_eval(reference.strip())
    if isinstance(reference, (list, tuple)):
        if not reference:
            raise ValueError("the golden call list is empty")
        reference = reference[0]
    if not isinstance(reference, dict) or not isinstance(reference.get("Action"), str):
        expected = '[{"Action": name, "Action_Input": json}, ...]'
        raise ValueError(f"a tool-use reference is {expected}; got {reference!r:.200}")
    arguments = reference.get("Action_Input", {})
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    if not isinstance(arguments, dict):
        raise ValueError(f"golden Action_Input is not a JSON object: {arguments!r:.200}")
    return reference["Action"].strip(), arguments


def normalise(arguments: dict) -> str:
    """Canonical JSON: sorted keys, no spacing."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ToolUseVerifier(Verifier):
    """Correct when the first Action and Action Input equal the first golden call."""

    name = "tooluse"

    def verify(self, completion: str, reference: Any) -> Verdict:
        want_name, want_args = golden_call(reference)
        name, arguments = extract_tool_call(completion)
        if name is None:
            return Verdict(False, "no Action")
        if arguments is None:
            return Verdict(False, f"action={name[:80]}; no JSON object after Action Input")
        correct = name == want_name and normalise(arguments) == normalise(want_args)
        return Verdict(correct, f"action={name[:80]} input={normalise(arguments)[:200]}")
