from collections import Counter

import pytest

from caopd_pl.tasks.arithmetic import ArithmeticTask, level_size, parse_level, unique_problems


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
