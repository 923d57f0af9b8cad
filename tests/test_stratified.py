"""Stratified prompt sampling (``data.stratify_by``): even counts per group, seeded per (seed, epoch), split across
ranks as uniform sampling is, identical to the old sampling when unset, and a bad key refused in one line."""

import json
import random
from collections import Counter

import pytest
from helpers import small_config

from caopd_pl.__main__ import main
from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.errors import UsageError
from caopd_pl.sampling import stratum_shares
from caopd_pl.tasks.arithmetic import ArithmeticTask
from caopd_pl.tasks.checks import check_stratify_key
from caopd_pl.tasks.jsonl import JsonlTask

LEVELS = ["1+1", "2+1", "2+2", "2*1"]


@pytest.fixture(scope="module")
def task():
    # 1+1 has 100 problems: after its held-out share, 51 train rows against 500 of each other level.
    task = ArithmeticTask(levels=LEVELS, ood_levels=[], num_train=2000)
    assert Counter(e.meta["level"] for e in task.split("train"))["1+1"] == 51
    return task


def levels_of(examples) -> Counter:
    return Counter(example.meta["level"] for example in examples)


def test_every_level_gets_an_even_share(task):
    data = RolloutDataModule(task, prompts_per_epoch=202, stratify_by="level")
    for epoch in range(5):
        counts = levels_of(data.epoch_prompts(epoch))
        assert sorted(counts.values()) == [50, 50, 51, 51]  # 202 // 4 each, the remainder of 2 to drawn levels
    # Uniform sampling gives 1+1 its share of the rows instead: about 5 of 202.
    assert levels_of(RolloutDataModule(task, prompts_per_epoch=202).epoch_prompts(0))["1+1"] < 15


def test_a_level_smaller_than_its_share_gives_all_its_rows_and_the_others_share_the_rest(task):
    data = RolloutDataModule(task, prompts_per_epoch=241, stratify_by="level")
    prompts = data.epoch_prompts(0)
    counts = levels_of(prompts)
    assert counts["1+1"] == 51 and sum(counts.values()) == 241  # 60 asked, 51 there: 190 left for three levels
    assert sorted(counts[level] for level in LEVELS[1:]) == [63, 63, 64]
    assert len({example.id for example in prompts}) == 241  # without replacement


def test_the_epoch_is_shuffled_so_levels_interleave(task):
    prompts = RolloutDataModule(task, prompts_per_epoch=64, stratify_by="level").epoch_prompts(0)
    sequence = [example.meta["level"] for example in prompts]
    changes = sum(a != b for a, b in zip(sequence, sequence[1:]))
    assert changes > 30  # grouped by level it would change 3 times; a random order changes about 48 times
    assert levels_of(prompts[:16]).keys() == set(LEVELS)


def test_shares_are_even_capped_and_complete():
    assert stratum_shares(random.Random(0), [5, 5, 5, 5], 20) == [5, 5, 5, 5]
    assert stratum_shares(random.Random(0), [2, 100, 100], 50) == [2, 24, 24]
    assert stratum_shares(random.Random(0), [1, 3, 100], 60) == [1, 3, 56]  # two rounds of shortfall
    for seed in range(20):
        shares = stratum_shares(random.Random(seed), [40, 40, 40], 61)
        assert sorted(shares) == [20, 20, 21] and sum(shares) == 61
    assert Counter(stratum_shares(random.Random(s), [40, 40, 40], 61).index(21) for s in range(60)).keys() == {0, 1, 2}
    with pytest.raises(ValueError, match="cannot draw 11 rows from groups of 10"):
        stratum_shares(random.Random(0), [5, 5], 11)


def test_the_whole_split_when_prompts_per_epoch_is_null(task):
    prompts = RolloutDataModule(task, prompts_per_epoch=None, stratify_by="level").epoch_prompts(2)
    assert sorted(example.id for example in prompts) == sorted(example.id for example in task.split("train"))


def test_seeded_by_seed_and_epoch_and_the_same_in_a_fresh_datamodule(task):
    def ids(seed, epoch):
        data = RolloutDataModule(task, prompts_per_epoch=64, seed=seed, stratify_by="level")  # a resumed run's
        return [example.id for example in data.epoch_prompts(epoch)]

    assert ids(0, 3) == ids(0, 3)
    assert ids(0, 3) != ids(0, 4) and ids(0, 3) != ids(1, 3)


def test_ranks_split_the_epoch_as_uniform_sampling_does(task):
    data = RolloutDataModule(task, prompts_per_epoch=65, stratify_by="level")
    whole = [example.id for example in data.epoch_prompts(1)]
    ranks = [[example.id for example in data.epoch_prompts(1, rank, 4)] for rank in range(4)]
    assert [len(r) for r in ranks] == [16] * 4  # 65 trimmed to 64, as today
    assert sorted(id_ for r in ranks for id_ in r) == sorted(whole[:64])
    assert all(ranks[rank] == whole[:64][rank::4] for rank in range(4))


def test_unset_samples_exactly_as_before(task):
    def old_epoch_prompts(pool, prompts_per_epoch, seed, epoch, rank=0, world_size=1):
        # The sampling before data.stratify_by existed, copied verbatim.
        count = len(pool) if prompts_per_epoch is None else min(prompts_per_epoch, len(pool))
        chosen = random.Random(seed * 7919 + epoch).sample(range(len(pool)), count)
        chosen = chosen[: count - count % world_size] if world_size > 1 else chosen
        return [pool[i] for i in chosen[rank::world_size]]

    pool = task.split("train")
    cases = [(64, 0, 0, 0, 1), (64, 3, 7, 1, 2), (None, 1, 2, 2, 3), (33, 5, 1, 0, 4)]
    for per_epoch, seed, epoch, rank, world in cases:
        data = RolloutDataModule(task, prompts_per_epoch=per_epoch, seed=seed)
        assert data.epoch_prompts(epoch, rank, world) == old_epoch_prompts(pool, per_epoch, seed, epoch, rank, world)


def jsonl_task(tmp_path, rows) -> JsonlTask:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return JsonlTask(train=str(path), verifier="exact")


def test_rows_lacking_the_key_are_counted_and_the_keys_they_have_named(tmp_path, task):
    rows = [{"prompt": f"{i}+1?", "answer": str(i + 1), "source": "a", "topic": "sums"} for i in range(5)]
    rows[1].pop("source")
    rows[3].pop("source")
    with pytest.raises(UsageError) as caught:
        check_stratify_key(jsonl_task(tmp_path, rows), "source")
    assert str(caught.value) == (
        "data.stratify_by='source': 2 of 5 train rows of JsonlTask have no meta key 'source' (first: ['train:1']); "
        "the meta keys every train row has: ['topic']; set data.stratify_by to one of them, or null"
    )
    check_stratify_key(jsonl_task(tmp_path, [{**row, "source": "b"} for row in rows]), "source")  # all have it
    with pytest.raises(UsageError, match=r"'source': 1551 of 1551 train rows .* every train row has: \['level'\]"):
        check_stratify_key(task, "source")


def test_values_that_cannot_be_grouped_are_refused(tmp_path):
    rows = [{"prompt": "1+1?", "answer": "2", "tags": ["easy"]}]
    with pytest.raises(UsageError, match="row 'train:0' of JsonlTask has a list there; stratify by a key whose"):
        check_stratify_key(jsonl_task(tmp_path, rows), "tags")


def test_an_empty_key_is_refused_at_construction(task):
    with pytest.raises(ValueError, match="data.stratify_by must name a meta key"):
        RolloutDataModule(task, stratify_by="")


@pytest.mark.slow
def test_fit_through_the_entry_point_samples_every_level_and_refuses_a_missing_key(tmp_path, capsys):
    config = str(small_config(tmp_path, max_epochs=1))
    assert main(["fit", "--config", config, "--data.stratify_by=source"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "caopd_pl fit: error: data.stratify_by='source': 40 of 40 train rows of ArithmeticTask have no meta key "
        "'source' (first: ['1+1:2+0']); the meta keys every train row has: ['level']; set data.stratify_by to one of "
        "them, or null\n"
    )
    assert "warmstart" not in captured.out and not (tmp_path / "checkpoints").exists()  # refused before any work

    assert main(["fit", "--config", config, "--data.stratify_by=level"]) == 0
    # 4 prompts per epoch over the 4 levels of the small config: one each.
    out = capsys.readouterr().out
    assert "data.stratify_by='level': epoch 0's prompts per group: 1+1 1, 2*1 1, 2+1 1, 2+2 1" in out
