"""RolloutDataModule's revision logic, with a scripted engine (the real engines are tested in tests/rollout and by
the end-to-end CLI test)."""

import pytest

from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine
from caopd_pl.tasks.arithmetic import ArithmeticTask
from caopd_pl.templates import TeacherConfig


class ScriptedEngine(RolloutEngine):
    """Answers each prompt with the given texts, in order."""

    def __init__(self, tokenizer, texts):
        self.tokenizer, self.texts, self.synced = tokenizer, texts, 0

    def sync(self, model):
        self.synced += 1

    def generate(self, prompts, config, seed):
        ids = [
            self.tokenizer(t, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id] for t in self.texts
        ]
        return [[Rollout(i, t, True) for i, t in zip(ids, self.texts)] for _ in prompts]


def _module(tokenizer, texts, **kwargs):
    task = ArithmeticTask(levels=["2+1"], ood_levels=[], num_train=20, num_val=4, num_test=4)
    data = RolloutDataModule(task, rollout=RolloutConfig(num_samples=len(texts)), **kwargs)
    data.engine = ScriptedEngine(tokenizer, texts)
    return data, task.split("train")[:3]


def _decode(tokenizer, ids):
    return tokenizer.decode(ids)


def test_empirical_revision(tokenizer):
    data, prompts = _module(tokenizer, ["Answer: 0\nConfidence: 1.00", "Answer: 5\nConfidence: 0.90"] * 2)
    prompts[0].reference = 0  # two of four rollouts right for the first prompt, none for the others
    epoch = data.build_epoch(None, tokenizer, prompts, epoch=0)
    assert data.engine.synced == 1 and len(epoch.examples) == 12
    first = epoch.examples[0]
    assert _decode(tokenizer, first.completion) == "Answer: 0\nConfidence: 0.50<|im_end|>"
    teacher = _decode(tokenizer, first.teacher_prompt)
    assert "This is an example for a response to the question:" in teacher
    assert "Confidence: 0.50" in teacher and "empirical confidence for this question is 0.50" in teacher
    assert _decode(tokenizer, epoch.examples[4].completion).endswith("Confidence: 0.00<|im_end|>")
    assert epoch.stats["p_acc"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert epoch.stats["stated_confidence"] == pytest.approx(0.95)


def test_none_keeps_the_rollouts_and_the_demo_confidence(tokenizer):
    texts = ["Answer: 0\nConfidence: 0.90"] * 2
    data, prompts = _module(tokenizer, texts, calibration="none")
    epoch = data.build_epoch(None, tokenizer, prompts, epoch=0)
    example = epoch.examples[0]
    assert _decode(tokenizer, example.completion) == texts[0] + "<|im_end|>"
    teacher = _decode(tokenizer, example.teacher_prompt)
    assert "Confidence: 1.00" in teacher and "empirical confidence" not in teacher


def test_correct_solution_uses_a_verified_rollout_or_falls_back(tokenizer):
    texts = ["Answer: 0\nConfidence: 0.3", "Answer: 999\nConfidence: 0.8"]
    data, prompts = _module(tokenizer, texts, teacher=TeacherConfig(template="correct_solution"))
    prompts[0].reference = 999
    epoch = data.build_epoch(None, tokenizer, prompts, epoch=0)
    with_correct = _decode(tokenizer, epoch.examples[0].teacher_prompt)
    assert "Correct solution:\nAnswer: 999\nConfidence: 0.50" in with_correct
    fallback = _decode(tokenizer, epoch.examples[2].teacher_prompt)
    assert "This is an example for a response to the question:" in fallback  # no correct rollout: demonstration


def test_correct_solution_can_skip_prompts_without_a_correct_rollout(tokenizer):
    teacher = TeacherConfig(template="correct_solution", no_correct_rollout="skip")
    data, prompts = _module(tokenizer, ["Answer: 0", "Answer: 1"], teacher=teacher)
    prompts[1].reference = 1
    assert len(data.build_epoch(None, tokenizer, prompts, epoch=0).examples) == 2


def test_epoch_prompts_are_seeded_and_split_across_ranks(tokenizer):
    data, _ = _module(tokenizer, ["x"], prompts_per_epoch=10)
    assert [e.id for e in data.epoch_prompts(3)] == [e.id for e in data.epoch_prompts(3)]
    assert [e.id for e in data.epoch_prompts(3)] != [e.id for e in data.epoch_prompts(4)]
    ranks = [data.epoch_prompts(3, rank, 3) for rank in range(3)]
    assert all(len(r) == 3 for r in ranks)
    assert len({e.id for r in ranks for e in r}) == 9


def test_bad_settings_name_the_key():
    task = ArithmeticTask(ood_levels=[], num_train=10, num_val=2, num_test=2)
    with pytest.raises(ValueError, match="data.calibration"):
        RolloutDataModule(task, calibration="sometimes")
    with pytest.raises(ValueError, match="data.test_split"):
        RolloutDataModule(task, test_split="ood")
    with pytest.raises(ValueError, match="rollout.num_samples"):
        RolloutConfig(num_samples=0)
