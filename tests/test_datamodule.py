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


def _module(tokenizer, texts, max_new_tokens=64, **kwargs):
    task = ArithmeticTask(levels=["2+1"], ood_levels=[], num_train=20, num_val=4, num_test=4)
    rollout = RolloutConfig(num_samples=len(texts), max_new_tokens=max_new_tokens)
    data = RolloutDataModule(task, rollout=rollout, **kwargs)
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
    # Prompts 0 and 2 have no correct rollout: skipped. Prompt 1's one correct rollout has no *other* correct one to
    # show its teacher: dropped; the wrong one sees it.
    examples = data.build_epoch(None, tokenizer, prompts, epoch=0).examples
    assert len(examples) == 1 and "Correct solution:\nAnswer: 1\n" in _decode(tokenizer, examples[0].teacher_prompt)


# Four rollouts, two of them correct for reference 999 (the first and the third), told apart by their first line.
GROUP = [
    "first\nAnswer: 999\nConfidence: 0.3",
    "second\nAnswer: 0\nConfidence: 0.1",
    "third\nAnswer: 999\nConfidence: 0.6",
    "fourth\nAnswer: 5\nConfidence: 0.2",
]


def _evidence_of(tokenizer, example):
    # The rollout the teacher prompt shows, by its first line.
    teacher = _decode(tokenizer, example.teacher_prompt)
    if "Correct solution:\n" not in teacher:
        return "demo" if "This is an example for a response to the question:" in teacher else None
    return teacher.split("Correct solution:\n", 1)[1].split("\n", 1)[0]


@pytest.mark.parametrize("calibration", ["empirical", "none"])
def test_correct_solution_never_shows_a_completion_its_own_text(tokenizer, calibration):
    teacher = TeacherConfig(template="correct_solution")
    data, prompts = _module(tokenizer, GROUP, teacher=teacher, calibration=calibration)
    prompts[0].reference = 999
    examples = data.build_epoch(None, tokenizer, prompts[:1], epoch=0).examples
    assert [_evidence_of(tokenizer, e) for e in examples] == ["third", "third", "first", "first"]
    teachers = [_decode(tokenizer, e.teacher_prompt) for e in examples]
    if calibration == "none":  # each evidence keeps the confidence it stated; the sampled tokens are kept
        assert "Confidence: 0.60" in teachers[0] and "Confidence: 0.30" in teachers[2]
        assert [_decode(tokenizer, e.completion) for e in examples] == [t + "<|im_end|>" for t in GROUP]
    else:
        assert all("Correct solution:\n" in t and "Confidence: 0.50" in t for t in teachers)


# "third" (correct) then "second" (wrong): "second" sees "third"; "third" never sees its own text.
@pytest.mark.parametrize("fallback, expected", [("demo", ["demo", "third"]), ("skip", ["third"])])
def test_the_lone_correct_rollout_falls_back_or_is_dropped(tokenizer, fallback, expected):
    teacher = TeacherConfig(template="correct_solution", no_correct_rollout=fallback)
    data, prompts = _module(tokenizer, [GROUP[2], GROUP[1]], teacher=teacher)
    prompts[0].reference = 999
    examples = data.build_epoch(None, tokenizer, prompts[:1], epoch=0).examples
    assert [_evidence_of(tokenizer, e) for e in examples] == expected
    assert all(e.p_acc == 0.5 for e in examples)  # P_acc counts the dropped completion


def test_revised_completions_are_capped_at_max_new_tokens(tokenizer):
    texts = ["0+0 is zero, since adding nothing changes nothing\nAnswer: 0\nConfidence: 1.00", "Answer: 0"]
    data, prompts = _module(tokenizer, texts, max_new_tokens=20)
    prompts[0].reference = 0
    examples = data.build_epoch(None, tokenizer, prompts[:1], epoch=0).examples
    capped, short = (_decode(tokenizer, e.completion) for e in examples)
    assert len(examples[0].completion) == 20 and capped.endswith("\nConfidence: 1.00<|im_end|>")
    assert texts[0].startswith(capped.removesuffix("\nConfidence: 1.00<|im_end|>"))
    assert short == "Answer: 0\nConfidence: 1.00<|im_end|>"


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
