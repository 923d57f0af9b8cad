import random
from collections import Counter

import pytest

from caopd_pl.tasks.arithmetic import (
    ArithmeticTask,
    column_steps,
    level_size,
    make_example,
    make_problem,
    parse_level,
    unique_problems,
)


def test_splits_are_disjoint_deterministic_and_sized():
    def make():
        return ArithmeticTask(levels=["2+2", "2+1", "2*1"], ood_levels=["3+2"], num_train=300, num_val=30, num_test=60)

    task = make()
    ids = {name: [e.id for e in task.split(name)] for name in task.splits()}
    assert sum(len(v) for v in ids.values()) == len({i for v in ids.values() for i in v})
    assert ids == {name: [e.id for e in make().split(name)] for name in task.splits()}
    assert {e.meta["level"] for e in task.split("ood")} == {"3+2"}
    assert [len(task.split(name)) for name in ("train", "val", "test", "ood")] == [300, 30, 60, 60]


def test_examples_are_correct_and_verifiable():
    task = ArithmeticTask(num_train=50, num_val=10, num_test=20)
    for example in task.split("test"):
        a_op_b = example.id.split(":")[1]
        assert example.reference == eval(a_op_b)  # noqa: S307 - digits and one operator, generated here
        assert task.verifier.verify(example.demonstration, example.reference).correct
        assert not task.verifier.verify("Answer: -1", example.reference).correct


def test_small_levels_are_not_exhausted():
    task = ArithmeticTask(levels=["1+1"], ood_levels=[], num_train=500, num_val=100, num_test=100)
    total = sum(len(task.split(s)) for s in task.splits())
    assert total <= level_size("1+1")
    assert len(task.split("train")) > 0 and len(task.split("test")) > 0


def test_subtraction_never_negative():
    problems = list(unique_problems(__import__("random").Random(0), "2-2"))
    assert len(problems) == level_size("2-2")
    assert all(a >= b for a, _, b in problems)


@pytest.mark.parametrize("bad", ["2/1", "22+1", "0+1", "", "a+b"])
def test_bad_levels_name_the_expected_form(bad):
    with pytest.raises(ValueError, match="must look like"):
        parse_level(bad)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="splits"):
        ArithmeticTask(ood_levels=[]).split("ood")


def test_held_out_splits_keep_every_level_share_when_train_is_large():
    task = ArithmeticTask(levels=["1+1", "2+1", "2+2"], ood_levels=[], num_train=20000, num_val=30, num_test=60)
    levels = {name: Counter(e.meta["level"] for e in task.split(name)) for name in task.splits()}
    assert levels["test"] == {"1+1": 20, "2+1": 20, "2+2": 20}
    assert levels["val"] == {"1+1": 10, "2+1": 10, "2+2": 10}
    # Small levels give training what the held-out splits leave; 2+2 has room for its full share.
    assert levels["train"] == {"1+1": 100 - 30, "2+1": 900 - 30, "2+2": 20000 // 3}


@pytest.mark.parametrize(
    ("a", "op", "b", "lines"),
    [
        (37, "+", 48, ["7+8=15", "3+4+1=8"]),
        (87, "+", 48, ["7+8=15", "8+4+1=13"]),
        (37, "+", 5, ["7+5=12", "3+0+1=4"]),
        (3, "+", 4, ["3+4=7"]),
        (37, "*", 4, ["7*4=28", "3*4+2=14"]),
        (10, "*", 0, ["0*0=0", "1*0=0"]),
    ],
)
def test_worked_demonstrations_show_the_column_method(a, op, b, lines):
    example = make_example(a, op, b, "level")
    assert column_steps(a, op, b) == lines
    assert example.demonstration == "\n".join([*lines, f"Answer: {example.reference}"])


def test_the_column_method_reads_off_the_answer():
    # The last line's value, then each earlier line's last digit: what the model has to copy into the answer line.
    rng = random.Random(0)
    for level in ["1+1", "2+1", "2+2", "3+2", "2*1", "3*1"]:
        for _ in range(200):
            a, op, b = make_problem(rng, level)
            steps = column_steps(a, op, b)
            digits = [step.rpartition("=")[2] for step in steps]
            read_off = digits[-1] + "".join(d[-1] for d in reversed(digits[:-1]))
            assert int(read_off) == (a + b if op == "+" else a * b)


def test_short_demonstrations_and_the_forms_without_columns():
    assert make_example(37, "+", 48, "2+2", "short").demonstration == "37+48=85\nAnswer: 85"
    assert column_steps(45, "-", 3) is None and column_steps(12, "*", 34) is None
    assert make_example(45, "-", 3, "2-1").demonstration == "45-3=42\nAnswer: 42"
    task = ArithmeticTask(levels=["2+2"], ood_levels=[], num_train=5, num_val=2, num_test=2, demonstration="short")
    assert all(e.demonstration.startswith(e.id.split(":")[1] + "=") for e in task.split("train"))
    with pytest.raises(ValueError, match="task.demonstration must be 'worked' or 'short'"):
        ArithmeticTask(demonstration="long")
