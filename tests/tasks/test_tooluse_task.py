"""Tool-use task: prompt/golden_answer/golden_response rows, repr-string golden answers, and the real rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caopd_pl.confidence import CONFIDENCE_INSTRUCTION
from caopd_pl.tasks.tooluse import ToolUseTask, parse_golden, tooluse_example

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "caopd-eval"
GOLDEN = [{"Action": "getFacts", "Action_Input": '{"limit": 3}'}]
PROMPT = "You have tools...\nBegin!\nQuestion: three facts please"


def test_row_with_repr_golden_and_no_golden_response():
    example = tooluse_example({"prompt": PROMPT, "golden_answer": repr(GOLDEN), "name": "Facts"}, "test:4")
    assert example.reference == GOLDEN
    assert example.demonstration == 'Action: getFacts\nAction Input: {"limit": 3}'
    assert example.meta == {"name": "Facts"}
    assert example.student_messages()[-1]["content"].endswith(CONFIDENCE_INSTRUCTION)
    assert example.student_messages()[-1]["content"].startswith(PROMPT)


def test_golden_response_is_the_demonstration():
    response = 'Thought: facts\nAction: getFacts\nAction Input: {"limit": 3}\nConfidence: 1.00'
    example = tooluse_example({"prompt": PROMPT, "golden_answer": GOLDEN, "golden_response": response}, "x")
    assert example.demonstration == response.rsplit("\nConfidence", 1)[0]


def test_bad_golden_answers():
    for bad in ("not a literal (", "[]", "[{'name': 'x'}]", "__import__('os')"):
        with pytest.raises(ValueError):
            parse_golden(bad)


def test_task_from_jsonl_judges_its_own_demonstrations(tmp_path):
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps({"prompt": PROMPT, "golden_answer": GOLDEN}) + "\n")
    task = ToolUseTask(train=str(path))
    example = task.split("train")[0]
    assert task.verifier.verify(example.demonstration, example.reference).correct


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real eval rows not present at {SHARED}")
def test_real_tooluse_rows():
    task = ToolUseTask(test=str(SHARED / "tooluse"))
    examples = task.split("test")
    assert len(examples) == 97
    assert all(e.messages[-1]["content"].rstrip().split("\n")[-1].startswith("Question:") for e in examples)
    assert {"name", "description", "instruction"} <= set(examples[0].meta)
    verdicts = task.verifier.verify_batch([e.demonstration for e in examples], [e.reference for e in examples])
    assert all(v.correct for v in verdicts)


# The released training split stores golden_response as a list of strings (its lines).
RESPONSE_LINES = ["Thought: I need three facts.", "Action: getFacts", 'Action Input: {"limit": 3}']


def test_golden_response_as_a_list_of_lines_keeps_the_thought():
    row = {"prompt": PROMPT, "golden_answer": GOLDEN, "golden_response": [*RESPONSE_LINES, "Confidence: 1.00"]}
    example = tooluse_example(row, "train:0")
    assert example.demonstration == "\n".join(RESPONSE_LINES)
    assert tooluse_example({**row, "golden_response": []}, "x").demonstration.startswith("Action: getFacts")


@pytest.mark.parametrize("bad, kind", [(["Thought: x", 3], "int 3"), ({"Action": "getFacts"}, "dict")])
def test_a_malformed_golden_response_names_the_column_and_row(bad, kind):
    row = {"prompt": PROMPT, "golden_answer": GOLDEN, "golden_response": bad, "id": "tool-9"}
    with pytest.raises(ValueError, match=rf"tool-use row tool-9: golden_response must be .*{kind}"):
        tooluse_example(row, "train:0")


def test_training_split_from_a_datasets_folder(tmp_path):
    import datasets

    rows = [{"prompt": PROMPT, "golden_answer": GOLDEN, "golden_response": RESPONSE_LINES}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "train_data"))
    task = ToolUseTask(train=str(tmp_path / "train_data"))
    example = task.split("train")[0]
    assert example.demonstration == "\n".join(RESPONSE_LINES) and example.reference == GOLDEN
    assert task.verifier.verify(example.demonstration, example.reference).correct
