"""Tool-use verifier: first Action / Action Input against the first golden call, and the real tooluse rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caopd_pl.verifiers import build
from caopd_pl.verifiers.tooluse import ToolUseVerifier, extract_tool_call, golden_call

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "caopd-eval"
GOLDEN = [
    {"Action": "searchImages", "Action_Input": '{"color": "wild", "page": 1}'},
    {"Action": "next", "Action_Input": "{}"},
]


def test_extract_first_call():
    text = 'Thought: t\nAction: searchImages\nAction Input: {"page": 1, "color": "wild"}\nObservation: x\nAction: b\n'
    assert extract_tool_call(text) == ("searchImages", {"page": 1, "color": "wild"})
    assert extract_tool_call("Action: x\nAction Input: not json") == ("x", None)
    assert extract_tool_call("nothing") == (None, None)


@pytest.mark.parametrize(
    ("completion", "correct"),
    [
        ('Thought: go\nAction: searchImages\nAction Input: {"page":1,"color":"wild"}\nConfidence: 0.9', True),
        ('Action: searchImages\nAction Input: ```json\n{"color": "wild",\n "page": 1}\n```', True),
        ('Action: searchImages\nAction Input: {"color": "wild", "page": 2}', False),
        ('Action: searchImages\nAction Input: {"color": "wild"}', False),
        ("Action: next\nAction Input: {}", False),  # only the first golden call counts
        ("Action: searchImages", False),
        ("I would search.", False),
    ],
)
def test_verdicts(completion, correct):
    assert ToolUseVerifier().verify(completion, GOLDEN).correct is correct


def test_reference_formats():
    assert golden_call(repr(GOLDEN)) == ("searchImages", {"color": "wild", "page": 1})
    assert golden_call({"Action": "a", "Action_Input": ""}) == ("a", {})
    assert golden_call([{"Action": "a", "Action_Input": {"k": 1}}]) == ("a", {"k": 1})
    with pytest.raises(ValueError):
        golden_call("__import__('os').system('echo pwned')")
    with pytest.raises(ValueError):
        golden_call([])


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real eval rows not present at {SHARED}")
def test_real_tooluse_rows():
    import datasets

    rows = datasets.load_from_disk(str(SHARED / "tooluse"))
    verifier = build("tooluse")
    right, wrong = [], []
    for golden in rows["golden_answer"]:
        arguments = json.loads(golden[0]["Action_Input"] or "{}")
        shuffled = json.dumps(dict(reversed(list(arguments.items()))), indent=1)  # other key order and spacing
        right.append(f"Thought: I need {golden[0]['Action']}.\nAction: {golden[0]['Action']}\nAction Input: {shuffled}")
        wrong.append(f"Action: {golden[0]['Action']}\nAction Input: {json.dumps({**arguments, 'extra': 1})}")
    assert all(v.correct for v in verifier.verify_batch(right, rows["golden_answer"]))
    assert not any(v.correct for v in verifier.verify_batch(wrong, rows["golden_answer"]))
