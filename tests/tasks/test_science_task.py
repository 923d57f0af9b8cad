"""Science task: both row formats of the paper (training rows whose answer is inside <answer> of output_text),
repr-string prompts, and the real science rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caopd_pl.confidence import CONFIDENCE_INSTRUCTION
from caopd_pl.tasks.science import ScienceTask, parse_messages, science_example

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "caopd-eval"
SYSTEM = {"role": "system", "content": "Respond with <reasoning>...</reasoning><answer>X</answer>."}
USER = {"role": "user", "content": "Which molecule? A: CCO B: CCN"}


def test_messages_output_text_format():
    row = {"messages": [SYSTEM, USER], "output_text": "<answer>A</answer>\nConfidence: 1.00", "answer": "A", "src": 3}
    example = science_example(row, "train:0")
    assert example.messages == [SYSTEM, USER]
    assert example.reference == "A" and example.demonstration == "<answer>A</answer>"
    assert example.meta == {"src": 3} and example.id == "train:0"


def test_prompt_as_python_repr_string_and_trailing_assistant():
    row = {"prompt": repr([SYSTEM, USER, {"role": "assistant", "content": "<answer>B</answer>"}]), "answer": "B"}
    example = science_example(row, "x")
    assert example.messages == [SYSTEM, USER] and example.demonstration == "<answer>B</answer>"
    student = example.student_messages()
    assert student[0] == SYSTEM and student[1]["content"].endswith(CONFIDENCE_INSTRUCTION)


def test_plain_question_and_smiles_reference():
    example = science_example({"prompt": "Give ethanol as SMILES.", "smiles": "CCO"}, "x")
    assert example.messages == [{"role": "user", "content": "Give ethanol as SMILES."}]
    assert example.reference == {"smiles": "CCO"}


def test_repr_strings_are_never_evaluated():
    hostile = "[__import__('os').system('touch /tmp/caopd_pwned')]"
    assert parse_messages(hostile) == [{"role": "user", "content": hostile}]
    assert not Path("/tmp/caopd_pwned").exists()
    with pytest.raises(ValueError, match="chat messages"):
        parse_messages([{"role": "user"}])


def test_task_from_jsonl(tmp_path):
    path = tmp_path / "sci.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": [SYSTEM, USER], "answer": a}) for a in "ABC") + "\n")
    task = ScienceTask(test=str(path), limit=2)
    assert task.splits() == ("test",) and task.verifier.name == "chemistry"
    assert [e.reference for e in task.split("test")] == ["A", "B"]
    with pytest.raises(ValueError, match="splits"):
        task.split("train")


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real eval rows not present at {SHARED}")
def test_real_science_rows():
    task = ScienceTask(test=str(SHARED / "science"))
    examples = task.split("test")
    assert len(examples) == 507
    assert {e.reference for e in examples} == set("ABCD")
    first = examples[0]
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert "<answer>" in first.messages[0]["content"]
    assert first.student_messages()[1]["content"].endswith(CONFIDENCE_INSTRUCTION)
    verdicts = task.verifier.verify_batch(
        [f"<answer>{e.reference}</answer>" for e in examples], [e.reference for e in examples]
    )
    assert all(v.correct for v in verdicts)


# The released training split: `messages` + `output_text`, the letter only inside <answer>...</answer>.
TRAIN_ROW = {
    "messages": [SYSTEM, USER],
    "output_text": "<reasoning>\nB has the amine.\n</reasoning>\n<answer>\nb\n</answer>\nConfidence: 1.00",
}


def test_training_rows_take_the_reference_from_the_demonstration():
    example = science_example(TRAIN_ROW, "train:0")
    assert example.reference == "B"  # the chemistry verifier's own extraction, upper-cased as it compares
    assert example.demonstration == "<reasoning>\nB has the amine.\n</reasoning>\n<answer>\nb\n</answer>"
    blank = science_example({**TRAIN_ROW, "answer": " "}, "train:1")  # a blank answer column is no answer
    assert blank.reference == "B"
    assert science_example({**TRAIN_ROW, "answer": "C"}, "train:2").reference == "C"  # a real one wins


def test_an_answer_after_the_confidence_is_not_the_reference():
    row = {**TRAIN_ROW, "output_text": "<answer>A</answer>\nConfidence: 1.00\n<answer>D</answer>"}
    assert science_example(row, "x").reference == "A"


@pytest.mark.parametrize(
    "output_text, found",
    [
        ("I think it is B.", "no <answer> tag"),
        ("<answer>CCO</answer>", "holds 'CCO'"),
        ("<answer></answer>", "holds ''"),
    ],
)
def test_a_row_without_a_reference_is_named(output_text, found):
    with pytest.raises(ValueError, match=rf"science row train:7: no reference: .*{found}"):
        science_example({"messages": [SYSTEM, USER], "output_text": output_text}, "train:7")
    with pytest.raises(ValueError, match="science row q-3: no reference"):
        science_example({"prompt": "Which?", "id": "q-3"}, "test:0")


def test_training_split_from_a_datasets_folder(tmp_path):
    import datasets

    rows = [TRAIN_ROW, {**TRAIN_ROW, "output_text": "<reasoning>x</reasoning><answer>D</answer>"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "train_data"))
    task = ScienceTask(train=str(tmp_path / "train_data"))
    examples = task.split("train")
    assert [e.reference for e in examples] == ["B", "D"]
    assert examples[0].messages == [SYSTEM, USER]
    verdicts = task.verifier.verify_batch([e.demonstration for e in examples], [e.reference for e in examples])
    assert all(v.correct for v in verdicts)  # the demonstrations are right answers, so P_acc can be above 0
