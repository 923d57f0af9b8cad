"""The project's JSONL format for math and code tasks."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from caopd_pl.tasks.jsonl import JsonlTask, jsonl_example

# CI sets CAOPD_REQUIRE_BWRAP=1 so that a missing bubblewrap fails these tests instead of skipping them.
NO_BWRAP = shutil.which("bwrap") is None and not os.environ.get("CAOPD_REQUIRE_BWRAP")

MATH_ROWS = [
    {"id": "m1", "prompt": "What is 3 + 4?", "answer": "7", "demonstration": "3 + 4 = 7, so \\boxed{7}", "level": 1},
    {"prompt": "Half of 1?", "answer": "\\frac{1}{2}", "system": "Be brief."},
]


def test_math_rows(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in MATH_ROWS) + "\n")
    task = JsonlTask(
        verifier={"class_path": "caopd_pl.verifiers.math.MathVerifier", "init_args": {"workers": 1}}, train=str(path)
    )
    try:
        first, second = task.split("train")
        assert (first.id, first.reference, first.meta) == ("m1", "7", {"level": 1})
        assert second.id == "train:1" and [m["role"] for m in second.messages] == ["system", "user"]
        verdicts = task.verifier.verify_batch(
            [first.demonstration, "\\boxed{0.5}"], [first.reference, second.reference]
        )
        assert [v.correct for v in verdicts] == [True, True]
    finally:
        task.verifier.close()


def test_missing_fields_name_the_row():
    with pytest.raises(ValueError, match="row 7: needs 'reference' or 'answer'"):
        jsonl_example({"id": 7, "prompt": "x"}, "train:0")
    with pytest.raises(ValueError, match="needs 'prompt' or 'messages'"):
        jsonl_example({"answer": "1"}, "train:0")


@pytest.mark.skipif(NO_BWRAP, reason="bubblewrap is not installed")
def test_code_rows(tmp_path):
    reference = {
        "prompt": "def inc(x):\n",
        "test": "def check(candidate):\n    assert candidate(1) == 2\n",
        "entry_point": "inc",
    }
    path = tmp_path / "code.jsonl"
    path.write_text(
        json.dumps({"prompt": "Complete inc(x).", "reference": reference, "demonstration": "    return x + 1"})
    )
    task = JsonlTask(verifier="code", test=str(path))
    try:
        example = task.split("test")[0]
        assert example.reference == reference
        verdicts = task.verifier.verify_batch([example.demonstration, "    return x"], [reference, reference])
        assert [v.correct for v in verdicts] == [True, False]
    finally:
        task.verifier.close()
