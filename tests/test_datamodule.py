"""RolloutDataModule: what it samples (seeds, prompts), and that it serves what :mod:`caopd_pl.revision` makes of the
rollouts, with a scripted engine (the real engines are tested in tests/rollout and by the end-to-end CLI test; the
revision itself in tests/test_revision.py)."""

import pytest

from caopd_pl.datamodule import RolloutDataModule, check_completion_cap
from caopd_pl.errors import UsageError
from caopd_pl.revision import revise_epoch
from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine
from caopd_pl.rollout.shared import SharedEngine
from caopd_pl.tasks.arithmetic import ArithmeticTask
from caopd_pl.tasks.checks import check_fit_data, check_warm_start_data
from caopd_pl.templates import TeacherConfig, prompt_ids, revised_completion_ids


class ScriptedEngine(RolloutEngine):
    """Answers each prompt with the given texts, in order; records every sync and every chunk's seed."""

    def __init__(self, config, tokenizer, texts):
        super().__init__(config, None, tokenizer)
        self.texts, self.synced, self.seeds = texts, 0, []

    def sync(self, model):
        self.synced += 1

    def generate_chunk(self, prompts, sampling, seed):
        self.seeds.append(seed)
        eos = [self.tokenizer.eos_token_id]
        ids = [self.tokenizer(text, add_special_tokens=False)["input_ids"] + eos for text in self.texts]
        return [[Rollout(i, text, True) for i, text in zip(ids, self.texts)] for _ in prompts]


def _datamodule(tokenizer, texts, **kwargs):
    task = ArithmeticTask(levels=["2+1"], ood_levels=[], num_train=20, num_val=4, num_test=4)
    rollout = RolloutConfig(num_samples=len(texts), max_new_tokens=64, batch_size=2 * len(texts), seed=5)
    data = RolloutDataModule(task, rollout=rollout, **kwargs)
    data.shared_engine.bind(None, tokenizer)
    data.shared_engine.engine = ScriptedEngine(rollout, tokenizer, texts)
    return data, task.split("train")[:3]


def test_build_epoch_samples_seeded_chunks_and_serves_the_revision(tokenizer):
    texts = ["Answer: 0\nConfidence: 1.00", "Answer: 5\nConfidence: 0.90"]
    data, prompts = _datamodule(tokenizer, texts, teacher=TeacherConfig(template="correct_solution"))
    prompts[0].reference = 0  # one of two rollouts right for the first prompt, none for the others
    epoch = data.build_epoch(prompts, epoch=2, rank=1)
    engine = data.engine
    # Synced once; chunks of batch_size // K = 2 prompts, seeded rollout.seed + 10,007 epoch + 101 rank + first index.
    assert engine.synced == 1 and engine.seeds == [5 + 10_007 * 2 + 101, 5 + 10_007 * 2 + 101 + 2]
    student_prompts = [prompt_ids(tokenizer, example.student_messages()) for example in prompts]
    groups = engine.generate(student_prompts, seed=0)
    verdicts = [[True, False], [False, False], [False, False]]
    expected = revise_epoch(tokenizer, prompts, student_prompts, groups, verdicts, data.revision)
    assert epoch.examples == expected and len(expected) == 6
    assert epoch.stats["p_acc"] == pytest.approx(0.5 / 3) and epoch.stats["stated_confidence"] == pytest.approx(0.95)
    assert epoch.stats["accuracy"] == pytest.approx(1 / 6) and epoch.stats["examples"] == 6.0


def test_revision_settings_come_from_the_data_options(tokenizer):
    data, _ = _datamodule(tokenizer, ["x", "y"], calibration="none", teacher=TeacherConfig(note=False))
    assert (data.revision.calibration, data.revision.teacher.note, data.revision.max_completion_tokens) == (
        "none",
        False,
        64,
    )


def test_an_engine_without_a_student_says_how_to_give_it_one():
    shared = SharedEngine(RolloutConfig())
    with pytest.raises(RuntimeError, match="shared_engine=data.shared_engine"):
        shared.synced()


def test_epoch_prompts_are_seeded_and_split_across_ranks(tokenizer):
    data, _ = _datamodule(tokenizer, ["x"], prompts_per_epoch=10)
    assert [e.id for e in data.epoch_prompts(3)] == [e.id for e in data.epoch_prompts(3)]
    assert [e.id for e in data.epoch_prompts(3)] != [e.id for e in data.epoch_prompts(4)]
    ranks = [data.epoch_prompts(3, rank, 3) for rank in range(3)]
    assert all(len(r) == 3 for r in ranks)
    assert len({e.id for r in ranks for e in r}) == 9


def test_train_rows_without_demonstrations_fail_the_checks_that_need_them():
    task = ArithmeticTask(levels=["2+1"], ood_levels=[], num_train=4, num_val=2, num_test=2)
    for example in task.split("train"):
        example.demonstration = None
    with pytest.raises(UsageError, match="data.teacher.template='demo' needs a demonstration"):
        check_fit_data(task, TeacherConfig())
    check_fit_data(task, TeacherConfig(template="correct_solution", no_correct_rollout="skip"))  # needs none
    reference_mode = TeacherConfig(template="correct_solution", evidence="demonstration", no_correct_rollout="skip")
    with pytest.raises(UsageError, match="data.teacher.evidence='demonstration' shows the demonstration"):
        check_fit_data(task, reference_mode)
    with pytest.raises(UsageError, match="model.warm_start trains on demonstrations, but 4 of 4 train rows"):
        check_warm_start_data(task)


def test_bad_settings_name_the_key():
    task = ArithmeticTask(ood_levels=[], num_train=10, num_val=2, num_test=2)
    with pytest.raises(ValueError, match="data.calibration"):
        RolloutDataModule(task, calibration="sometimes")
    with pytest.raises(ValueError, match="data.test_split"):
        RolloutDataModule(task, test_split="ood")
    with pytest.raises(ValueError, match="rollout.num_samples"):
        RolloutConfig(num_samples=0)


def test_a_completion_cap_must_hold_the_confidence_line_and_the_message_says_the_least_it_accepts(tokenizer):
    line = len(revised_completion_ids(tokenizer, "", 1.0))  # the confidence line and EOS alone
    with pytest.raises(UsageError, match=f"max_new_tokens={line - 1} is shorter .* give at least {line}"):
        check_completion_cap(tokenizer, line - 1)
    check_completion_cap(tokenizer, line)  # the least the message names is accepted
