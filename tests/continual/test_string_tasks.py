"""The generated string tasks and their answer_text verifier."""

import pytest

from caopd_pl.tasks.strings import StringTask
from caopd_pl.verifiers import build


@pytest.mark.parametrize("kind", ["reverse", "sort", "count", "max"])
def test_splits_are_disjoint_and_demonstrations_verify(kind):
    task = StringTask(kind=kind, min_length=2, max_length=4, num_train=50, num_val=10, num_test=20, seed=3)
    splits = {name: task.split(name) for name in task.splits()}
    assert [len(splits[n]) for n in ("train", "val", "test")] == [50, 10, 20]
    ids = [example.id for examples in splits.values() for example in examples]
    assert len(set(ids)) == len(ids)
    verifier = build("answer_text")
    for example in splits["train"]:
        assert verifier.verify(example.demonstration + "\nConfidence: 1.00", example.reference).correct
    assert (
        StringTask(kind=kind, num_train=5, seed=3).split("test")[0].id
        == StringTask(kind=kind, seed=3).split("test")[0].id
    )  # the test split does not depend on the train size


def test_answers_are_right():
    (example,) = StringTask(kind="reverse", min_length=3, max_length=3, num_train=0, num_val=0, num_test=1).split(
        "test"
    )
    text = example.messages[0]["content"].split(": ")[1]
    assert example.reference == text[::-1]
    (example,) = StringTask(kind="count", alphabet="ab", num_train=0, num_val=0, num_test=1).split("test")
    letter, word = example.id.split(":", 1)[1].split(":")
    assert example.reference == str(word.count(letter))


def test_verifier_reads_the_last_answer_line_before_the_confidence():
    verifier = build("answer_text")
    assert verifier.verify("Answer: ab\nAnswer: ba\nConfidence: 0.5", "ba").correct
    assert not verifier.verify("Answer: ab \nConfidence: 0.5", "ba").correct
    assert not verifier.verify("no answer", "ba").correct
    assert verifier.verify("Answer:  12", 12).correct


def test_small_space_fills_what_it_can_and_bad_values_fail():
    task = StringTask(kind="reverse", min_length=1, max_length=1, alphabet="ab", num_train=5, num_val=5, num_test=5)
    assert sum(len(task.split(n)) for n in task.splits()) == 2  # only "a" and "b" exist
    with pytest.raises(ValueError, match="task.kind"):
        StringTask(kind="shuffle")
    with pytest.raises(ValueError, match="min_length"):
        StringTask(min_length=3, max_length=2)
