"""GRPO (the RL baselines): group advantages, the chunked token log-probabilities, the clipped objective and its
gradient against a hand computation and a plain full-logits reference, the examples the datamodule serves, and a
run through the CLI."""

import json
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import TINY_MODEL, assert_resumed_like, fit, metrics_rows, resume_config, small_config, wait_for
from lightning.pytorch import Callback
from lightning.pytorch.plugins.precision import HalfPrecision

from caopd_pl.cli import cli_main
from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.grpo import (
    PolicyExample,
    PolicyLossConfig,
    RLConfig,
    batch_floats,
    clipped_objective,
    collate_policy,
    group_advantages,
    grpo_loss,
    policy_examples,
    score_old_logprobs,
    token_logprobs,
    token_weights,
)
from caopd_pl.models.loading import ModelConfig
from caopd_pl.models.tiny import TinyModelConfig
from caopd_pl.module import CaOPDModule
from caopd_pl.rewards import make_reward
from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine
from caopd_pl.sampling import EpochPermutation
from caopd_pl.tasks.arithmetic import ArithmeticTask

# ---- advantages ------------------------------------------------------------------------------------------------------


def test_group_advantages_by_hand():
    # mean 0.5, unbiased std sqrt(1/3): A = +-0.5 / (0.57735 + eps)
    scaled = group_advantages([1.0, 0.0, 0.0, 1.0], scale=True, eps=1e-4)
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert scaled == pytest.approx([expected, -expected, -expected, expected], rel=1e-12)
    assert group_advantages([1.0, 0.0, 0.0, 1.0], scale=False) == [0.5, -0.5, -0.5, 0.5]
    assert group_advantages([0.96, -2.0], scale=False) == pytest.approx([1.48, -1.48])
    assert group_advantages([0.3, 0.3, 0.3]) == [0.0, 0.0, 0.0]  # no signal in a flat group


def test_rlcr_without_varied_confidences_gets_rlvrs_advantages():
    # Every rollout states 1.00: RLCR's reward is 2 * 1[correct] - 1, affine in RLVR's, so after the group's
    # normalisation the advantages agree but for eps. GRPO cannot reward a confidence it never samples.
    correct = [True, False, False, True, False]
    rlvr, rlcr = make_reward("rlvr"), make_reward("rlcr")
    text = "Answer: 7\nConfidence: 1.00"
    assert [rlcr(text, c) for c in correct] == [2 * rlvr(text, c) - 1 for c in correct]
    assert group_advantages([rlcr(text, c) for c in correct]) == pytest.approx(
        group_advantages([rlvr(text, c) for c in correct]), rel=1e-3
    )


def test_policy_examples_reward_each_rollout_and_normalise_within_its_prompt(tokenizer):
    texts = ["Answer: 7\nConfidence: 0.80", "Answer: 3\nConfidence: 0.90", "Answer: 3"]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    groups = [[Rollout(i, t, True) for i, t in zip(ids, texts)], [Rollout(i, t, True) for i, t in zip(ids, texts)]]
    config = RLConfig(reward="rlcr", scale_rewards=False)
    examples = policy_examples(
        [[1, 2], [3]], groups, [[True, False, False], [False, False, False]], make_reward("rlcr"), config
    )
    rewards = [[0.96, -0.81, -2.0], [-0.64, -0.81, -2.0]]
    assert [e.reward for e in examples] == pytest.approx(rewards[0] + rewards[1])
    means = [sum(group) / 3 for group in rewards]
    advantages = [r - means[0] for r in rewards[0]] + [r - means[1] for r in rewards[1]]
    assert [e.advantage for e in examples] == pytest.approx(advantages)
    assert [e.prompt for e in examples] == [[1, 2]] * 3 + [[3]] * 3 and examples[1].completion == ids[1]


# ---- chunked token log-probabilities --------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_match_log_softmax_in_value_and_gradient(chunk_size, temperature):
    hidden = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (9,))
    upstream = torch.randn(9, dtype=torch.float64)
    values = token_logprobs(hidden, weight, targets, temperature, chunk_size)
    grads = torch.autograd.grad((values * upstream).sum(), [hidden, weight])
    reference = F.log_softmax(hidden @ weight.T / temperature, -1).gather(1, targets[:, None]).squeeze(1)
    expected = torch.autograd.grad((reference * upstream).sum(), [hidden, weight])
    torch.testing.assert_close(values, reference)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_token_logprobs_are_float32_for_bfloat16_weights():
    hidden, weight = torch.randn(5, 8), torch.randn(13, 8)
    targets = torch.randint(0, 13, (5,))
    values = token_logprobs(hidden.bfloat16(), weight.bfloat16(), targets, chunk_size=2)
    reference = F.log_softmax(hidden.bfloat16().float() @ weight.bfloat16().float().T, -1)
    assert values.dtype == torch.float32
    torch.testing.assert_close(values, reference.gather(1, targets[:, None]).squeeze(1))


# ---- the objective -------------------------------------------------------------------------------------------------

LN = math.log


def _hand_batch() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Two sequences of 3 tokens, vocabulary 3; with an identity output embedding the hidden states are the logits.

    Completion tokens: sequence 0 predicts ids[0, 1] = 1 at position 0 and ids[0, 2] = 2 at position 1; sequence 1
    predicts ids[1, 1] = 2 at position 0.
    """
    hidden = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [LN(2), 0.0, 0.0], [5.0, 5.0, 5.0]],  # p = (1/3, 1/3, 1/3), (1/2, 1/4, 1/4), unused
            [[0.0, LN(3), 0.0], [1.0, 2.0, 3.0], [4.0, 4.0, 4.0]],  # p = (1/5, 3/5, 1/5), unused, unused
        ],
        dtype=torch.float64,
        requires_grad=True,
    )
    mask = torch.tensor([[True, True, False], [True, False, False]])
    old = torch.zeros(2, 3, dtype=torch.float64)
    old[0, 0], old[0, 1], old[1, 0] = LN(1 / 3), LN(1 / 8), LN(2 / 15)  # ratios 1, 2 and 1.5
    batch = {
        "student_ids": torch.tensor([[0, 1, 2], [0, 2, 0]]),
        "student_attention": torch.ones(2, 3, dtype=torch.long),
        "student_mask": mask,
        "old_logprobs": old,
        "advantages": torch.tensor([1.0, -0.5], dtype=torch.float64),
        "temperature": torch.tensor(1.0),
    }
    return hidden, batch


def test_grpo_loss_and_gradient_by_hand():
    hidden, batch = _hand_batch()
    weight = torch.eye(3, dtype=torch.float64, requires_grad=True)
    loss, stats = grpo_loss(hidden, weight, batch, PolicyLossConfig(clip_low=0.2, clip_high=0.2, chunk_size=2))
    # Sequence averaging: tokens of sequence 0 weigh 1/2 * 1/2, sequence 1's token 1 * 1/2.
    #   token (0, 0): ratio 1,   A = 1:    -min(1, 1)          = -1
    #   token (0, 1): ratio 2,   A = 1:    -min(2, 1.2)        = -1.2  (clipped: no gradient)
    #   token (1, 0): ratio 1.5, A = -0.5: -min(-0.75, -0.6)   = 0.75  (the pessimistic side: not clipped)
    assert loss.item() == pytest.approx(0.25 * -1 + 0.25 * -1.2 + 0.5 * 0.75, abs=1e-12)  # -0.175
    assert stats["clip_fraction"].item() == pytest.approx(0.25) and stats["tokens"].item() == 3
    grad_hidden, grad_weight = torch.autograd.grad(loss, [hidden, weight])
    # d/dz of -w A ratio = -w A ratio (onehot(y) - p) where not clipped
    expected = torch.zeros(2, 3, 3, dtype=torch.float64)
    expected[0, 0] = -0.25 * 1.0 * 1.0 * (torch.tensor([0.0, 1.0, 0.0]) - torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    expected[1, 0] = -0.5 * -0.5 * 1.5 * (torch.tensor([0.0, 0.0, 1.0]) - torch.tensor([0.2, 0.6, 0.2]))
    torch.testing.assert_close(grad_hidden, expected)  # [1/12, -1/6, 1/12] and [-0.075, -0.225, 0.3]
    # logits = hidden @ W.T, so dL/dW = sum over positions of outer(dL/dz, hidden)
    expected_weight = torch.outer(expected[0, 0], hidden[0, 0]) + torch.outer(expected[1, 0], hidden[1, 0])
    torch.testing.assert_close(grad_weight, expected_weight.detach())

    token_loss, _ = grpo_loss(hidden, weight, batch, PolicyLossConfig(average="token"))
    assert token_loss.item() == pytest.approx((-1 - 1.2 + 0.75) / 3, abs=1e-12)


def test_clip_higher_lets_a_larger_ratio_through():
    logprobs = torch.tensor([LN(0.5)], dtype=torch.float64, requires_grad=True)
    old, advantage, weights = torch.tensor([LN(0.4)]), torch.tensor([1.0]), torch.tensor([1.0])  # ratio 1.25
    symmetric, stats = clipped_objective(logprobs, old, advantage, weights, PolicyLossConfig(clip_high=0.2))
    assert symmetric.item() == pytest.approx(-1.2) and stats["clip_fraction"].item() == 1.0
    higher, stats = clipped_objective(logprobs, old, advantage, weights, PolicyLossConfig(clip_high=0.28))
    assert higher.item() == pytest.approx(-1.25) and stats["clip_fraction"].item() == 0.0


def reference_grpo_loss(hidden, weight, batch, config, reference_hidden=None, reference_weight=None):
    """GRPO's loss from full (B, T, V) logits, written independently of caopd_pl.grpo."""
    temperature = float(batch["temperature"])
    log_p = F.log_softmax(hidden @ weight.T / temperature, -1)  # (B, T, V)
    next_ids = torch.cat([batch["student_ids"][:, 1:], batch["student_ids"][:, :1]], dim=1)  # (B, T)
    picked = log_p.gather(2, next_ids[..., None]).squeeze(2)  # (B, T)
    ratio = (picked - batch["old_logprobs"]).exp()
    advantage = batch["advantages"][:, None]
    low, high = 1 - config.clip_low, 1 + config.clip_high
    per_token = -torch.minimum(ratio * advantage, ratio.clamp(low, high) * advantage)
    if config.kl_coef > 0:
        log_ref = F.log_softmax(reference_hidden @ reference_weight.T / temperature, -1)
        if config.kl == "k3":
            r = log_ref.gather(2, next_ids[..., None]).squeeze(2) - picked
            per_token = per_token + config.kl_coef * (r.exp() - r - 1)
        else:
            per_token = per_token + config.kl_coef * (log_p.exp() * (log_p - log_ref)).sum(-1)
    mask = batch["student_mask"].to(per_token.dtype)
    if config.average == "token":
        return (per_token * mask).sum() / mask.sum()
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


@pytest.mark.parametrize("average", ["sequence", "token"])
@pytest.mark.parametrize(("kl", "kl_coef"), [("k3", 0.0), ("k3", 0.3), ("exact", 0.3)])
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_grpo_loss_matches_a_full_logits_reference(average, kl, kl_coef, chunk_size):
    generator = torch.Generator().manual_seed(3)
    b, t, h, v = 3, 7, 5, 17
    hidden = torch.randn(b, t, h, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, generator=generator, requires_grad=True)
    reference_hidden = torch.randn(b, t, h, dtype=torch.float64, generator=generator)
    reference_weight = torch.randn(v, h, dtype=torch.float64, generator=generator)
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[0, 2:6], mask[1, 1:3], mask[2, 3:6] = True, True, True  # completions of 4, 2 and 3 tokens
    batch = {
        "student_ids": torch.randint(0, v, (b, t), generator=generator),
        "student_mask": mask,
        # ratios from 0.5 to 2: some clipped on each side
        "old_logprobs": torch.full((b, t), -math.log(v)) + torch.empty(b, t).uniform_(-0.7, 0.7, generator=generator),
        "advantages": torch.tensor([1.3, -0.4, 0.8], dtype=torch.float64),
        "temperature": torch.tensor(0.7),
    }
    config = PolicyLossConfig(
        clip_low=0.2, clip_high=0.28, kl=kl, kl_coef=kl_coef, average=average, chunk_size=chunk_size
    )
    loss, stats = grpo_loss(hidden, weight, batch, config, reference_hidden, reference_weight)
    expected = reference_grpo_loss(hidden, weight, batch, config, reference_hidden, reference_weight)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, [hidden, weight]), torch.autograd.grad(expected, [hidden, weight])):
        torch.testing.assert_close(got, want)
    assert 0 < stats["clip_fraction"].item() < 1 and ("kl" in stats) == (kl_coef > 0)


def test_token_weights_sum_to_one_and_skip_empty_sequences():
    mask = torch.tensor([[True, True, False], [False, False, False], [True, False, False]])
    torch.testing.assert_close(token_weights(mask, "sequence"), torch.tensor([0.25, 0.25, 0.5]))
    torch.testing.assert_close(token_weights(mask, "token"), torch.full((3,), 1 / 3))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("clip_low", 1.0, "model.policy_loss.clip_low must be in [0, 1)"),
        ("clip_high", -0.1, "model.policy_loss.clip_high >= 0"),
        ("kl_coef", -1.0, "model.policy_loss.kl_coef must be >= 0, got -1.0"),
        ("kl", "k2", "model.policy_loss.kl must be one of ['k3', 'exact'], got 'k2'"),
        ("average", "batch", "model.policy_loss.average must be one of ['token', 'sequence'], got 'batch'"),
        ("chunk_size", 0, "model.policy_loss.chunk_size must be >= 1, got 0"),
    ],
)
def test_policy_loss_settings_are_checked_at_construction(key, value, message):
    with pytest.raises(ValueError) as raised:
        PolicyLossConfig(**{key: value})
    assert message in str(raised.value) and "\n" not in str(raised.value)


# ---- the module on policy batches ------------------------------------------------------------------------------------

TINY = TinyModelConfig(**TINY_MODEL)


def _scored_batch(module, tokenizer, advantages, temperature=0.7):
    generator = torch.Generator().manual_seed(1)
    examples = [
        PolicyExample(
            prompt=torch.randint(3, len(tokenizer), (4 + row,), generator=generator).tolist(),
            completion=torch.randint(3, len(tokenizer), (3 + 2 * row,), generator=generator).tolist(),
            reward=0.0,
            advantage=advantage,
        )
        for row, advantage in enumerate(advantages)
    ]
    score_old_logprobs(module.student, examples, tokenizer.pad_token_id, temperature, batch_size=2)
    assert [len(e.old_logprobs) for e in examples] == [len(e.completion) for e in examples]
    return collate_policy(examples, tokenizer.pad_token_id, temperature)


def test_the_first_step_on_fresh_rollouts_is_on_policy(tokenizer):
    module = CaOPDModule(ModelConfig(tiny=TINY))
    module.train()
    batch = _scored_batch(module, tokenizer, [1.5, -0.5, 0.25])
    loss, stats = module.policy_loss(batch)
    # The old log-probabilities are the student's own (scored in other batches, in eval mode): every ratio is 1, so
    # nothing is clipped and the loss is -(sum of the token weights times their advantages), the policy gradient's.
    assert stats["clip_fraction"].item() == 0.0
    advantages = batch_floats(batch, "advantages")
    assert loss.item() == pytest.approx(-advantages.mean().item(), abs=1e-5)  # each sequence weighs 1/B


def test_a_policy_batch_keeps_its_floats_through_the_bf16_true_input_cast(tokenizer):
    # Issue 27: Lightning's bf16-true casts every floating tensor of a batch to bf16 before the step
    # (HalfPrecision.convert_input): the old log-probabilities lost up to 2^-9 of their value and the temperature 0.7
    # became 0.6992, so the first step's ratios were not 1 (measured: 1% off at log-probabilities near -6).
    module = CaOPDModule(ModelConfig(tiny=TINY))
    batch = _scored_batch(module, tokenizer, [1.5, -0.5, 0.25])
    converted = HalfPrecision("bf16-true").convert_input(batch)
    assert converted["student_ids"].dtype == torch.long  # ids are never cast
    for key in ("old_logprobs", "advantages", "temperature"):
        assert torch.equal(batch_floats(converted, key), batch_floats(batch, key)), key
    loss, stats = module.policy_loss(converted)
    assert stats["clip_fraction"].item() == 0.0
    assert loss.item() == pytest.approx(-batch_floats(batch, "advantages").mean().item(), abs=1e-6)


def test_zero_advantages_without_a_penalty_leave_the_student_as_it_is(tokenizer):
    module = CaOPDModule(ModelConfig(tiny=TINY))
    loss, _ = module.policy_loss(_scored_batch(module, tokenizer, [0.0, 0.0]))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in module.student.parameters())


def test_the_kl_penalty_is_to_the_start_model_and_zero_at_the_start(tokenizer):
    config = PolicyLossConfig(kl_coef=0.5, kl="exact")
    module = CaOPDModule(ModelConfig(tiny=TINY), policy_loss=config)
    batch = _scored_batch(module, tokenizer, [1.0, -1.0])
    assert module.policy_loss(batch)[1]["kl"].item() == pytest.approx(0.0, abs=1e-6)  # teacher == student
    with torch.no_grad():
        module.student.get_output_embeddings().weight.mul_(1.5)  # the student moves, the reference stays
    assert module.policy_loss(batch)[1]["kl"].item() > 1e-3


def test_collate_puts_each_old_logprob_at_the_position_that_predicts_its_token():
    examples = [
        PolicyExample([5, 6], [7, 8, 9], 1.0, 0.5, [-1.0, -2.0, -3.0]),
        PolicyExample([5], [4], 0.0, -0.5, [-4.0]),
    ]
    batch = collate_policy(examples, pad_id=0, temperature=0.7)
    assert batch["student_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 4, 0, 0, 0]]
    assert batch["student_mask"].tolist() == [[False, True, True, True, False], [True, False, False, False, False]]
    assert batch_floats(batch, "old_logprobs")[batch["student_mask"]].tolist() == [-1.0, -2.0, -3.0, -4.0]
    assert batch_floats(batch, "advantages").tolist() == [0.5, -0.5]
    assert batch_floats(batch, "temperature").item() == pytest.approx(0.7)
    with pytest.raises(ValueError, match="score_old_logprobs first"):
        collate_policy([PolicyExample([5], [4], 0.0, 0.0)], pad_id=0, temperature=1.0)


# ---- the datamodule's RL epochs -------------------------------------------------------------------------------------


class FixedTexts(RolloutEngine):
    """Answers every prompt with the given texts, in order."""

    def __init__(self, config, tokenizer, texts):
        super().__init__(config, None, tokenizer)
        self.texts = texts

    def sync(self, model):
        pass

    def generate_chunk(self, prompts, sampling, seed):
        eos = [self.tokenizer.eos_token_id]
        ids = [self.tokenizer(text, add_special_tokens=False)["input_ids"] + eos for text in self.texts]
        return [[Rollout(i, text, True) for i, text in zip(ids, self.texts)] for _ in prompts]


def test_an_rl_epoch_serves_rewarded_scored_examples_each_pass(tokenizer):
    texts = ["Answer: 0\nConfidence: 0.80", "Answer: 5\nConfidence: 0.90", "Answer: 5"]
    task = ArithmeticTask(levels=["2+1"], ood_levels=[], num_train=20, num_val=4, num_test=4)
    rollout = RolloutConfig(num_samples=3, max_new_tokens=64, temperature=0.7)
    data = RolloutDataModule(task, rollout=rollout, rl=RLConfig(reward="rlcr", passes=2), batch_size=4)
    module = CaOPDModule(ModelConfig(tiny=TINY), shared_engine=data.shared_engine)
    data.shared_engine.engine = FixedTexts(rollout, tokenizer, texts)
    prompts = task.split("train")[:2]
    prompts[0].reference = 0  # the first rollout right for the first prompt, none for the second
    epoch = data.build_epoch(prompts, epoch=0)
    assert [e.reward for e in epoch.examples] == pytest.approx([0.96, -0.81, -2.0, -0.64, -0.81, -2.0])
    assert epoch.examples[0].advantage > 0 > epoch.examples[2].advantage
    assert all(len(e.old_logprobs) == len(e.completion) for e in epoch.examples)
    assert epoch.stats["reward"] == pytest.approx(sum(e.reward for e in epoch.examples) / 6)
    assert epoch.stats["flat_groups"] == 0.0 and epoch.stats["accuracy"] == pytest.approx(1 / 6)
    sampler = EpochPermutation(6, seed=4, passes=2)
    order = list(sampler)
    assert len(sampler) == 12 and sorted(order[:6]) == sorted(order[6:]) == list(range(6))
    assert order[:6] == list(EpochPermutation(6, seed=4))  # the first pass is what one pass serves
    with torch.no_grad():
        loss, stats = module.policy_loss(collate_policy(epoch.examples, tokenizer.pad_token_id, 0.7))
    assert stats["clip_fraction"].item() == 0.0 and torch.isfinite(loss)


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        (RolloutConfig(num_samples=1), "data.rollout.num_samples=1: data.rl compares each rollout with its group"),
        (RolloutConfig(temperature=0.0), "data.rollout.temperature=0 with data.rl: greedy rollouts of a prompt"),
    ],
)
def test_rl_refuses_rollouts_without_a_group_to_compare(rollout, message):
    task = ArithmeticTask(levels=["2+1"], ood_levels=[], num_train=20, num_val=4, num_test=4)
    with pytest.raises(ValueError, match=message):
        RolloutDataModule(task, rollout=rollout, rl=RLConfig())


# ---- through the CLI ------------------------------------------------------------------------------------------------


class _Reference(Callback):
    """The teacher's weights when training starts (after the warm start) and the student's at the end."""

    def on_train_start(self, trainer, module):
        self.start = {k: v.clone() for k, v in module.teacher.state_dict().items()}
        self.student_start = {k: v.clone() for k, v in module.student.state_dict().items()}


RL_RUN = ["--model.warm_start.steps", "200", "--data.rollout.max_new_tokens", "24"]
"""Long enough for the tests' tiny model to state a confidence in some rollouts (with 4 warm-start steps and 8 tokens
no rollout has one: every RLCR reward is the unparsed -2, no group has a signal)."""


def _fit_rl(root, *args):
    cli = cli_main(["--config", str(small_config(root)), "--trainer.logger", "false", *RL_RUN, *args], run=False)
    probe = _Reference()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    teacher, student = cli.model.teacher.state_dict(), cli.model.student.state_dict()
    assert all(torch.equal(teacher[k], probe.start[k]) for k in teacher)  # the reference, never EMA-updated
    moved = any(not torch.equal(student[k], probe.student_start[k]) for k in student)
    return cli, moved


@pytest.mark.slow
def test_fit_trains_grpo_and_keeps_the_start_model_as_its_reference(tmp_path):
    cli, moved = _fit_rl(tmp_path, "--data.rl.reward", "rlcr", "--model.policy_loss.kl_coef", "0.1")
    metrics = cli.trainer.logged_metrics
    assert moved and metrics["rollout/flat_groups"] < 1
    assert {"train/clip_fraction", "train/kl", "rollout/reward", "rollout/format_adherence"} <= set(metrics)
    assert cli.trainer.global_step == 4  # 4 prompts x K = 2 examples per epoch in batches of 4, 2 epochs


@pytest.mark.slow
def test_rlvr_without_a_correct_rollout_leaves_the_student_where_it_is(tmp_path):
    # The tests' tiny model, warm-started on the short demonstrations (the worked ones teach it some sums in 200
    # steps), answers nothing right: every group's rewards are 0, every advantage 0, and the KL to a reference equal
    # to the student has a zero gradient.
    short = ["--data.task.init_args.demonstration", "short"]
    cli, moved = _fit_rl(tmp_path, "--data.rl.reward", "rlvr", "--model.policy_loss.kl_coef", "0.1", *short)
    assert cli.trainer.logged_metrics["rollout/flat_groups"] == 1.0 and cli.trainer.global_step == 4
    assert not moved


def rl_resume_config(root, reward="rlcr", **probe):
    """tests/test_resume.py's small run (3 epochs of 2 optimizer steps) as GRPO: 2 passes, a KL penalty."""
    path = resume_config(root, **probe)
    config = yaml.safe_load(path.read_text())
    config["data"]["rl"] = {"reward": reward, "passes": 2}
    config["data"]["rollout"]["max_new_tokens"] = 24
    config["model"]["policy_loss"] = {"kl_coef": 0.1}
    config["model"]["warm_start"]["steps"] = 200  # some rollouts state a confidence (RL_RUN)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_grpo_killed_mid_epoch_resumes_bit_identically(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    fit(rl_resume_config(straight))
    epochs = [row for row in metrics_rows(straight) if row["train/clip_fraction"]]
    # Something to replay: groups with a signal, a second pass whose ratios leave the clip range, a reference apart.
    assert len(epochs) == 3 and min(float(row["rollout/flat_groups"]) for row in epochs) < 1
    assert max(float(row["train/clip_fraction"]) for row in epochs) > 0 < float(epochs[-1]["train/kl"])

    marker = killed / "paused.json"
    process = fit(rl_resume_config(killed, pause_epoch=1, pause_batch=1, marker=str(marker)), wait=False)
    wait_for(marker, process)
    os.kill(process.pid, signal.SIGKILL)  # in epoch 1, after its second optimizer step (of its first pass)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    saved = torch.load(killed / "checkpoints/last.ckpt", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] < json.loads(marker.read_text())["step"]

    fit(rl_resume_config(killed), "--ckpt_path", "last")

    assert_resumed_like(straight, killed)  # student, teacher (the reference) and optimizer states, bit for bit
    rng = [[json.loads(line) for line in (root / "rng.jsonl").read_text().splitlines()] for root in (straight, killed)]
    by_batch = [{(r["epoch"], r["batch"]): r["rng"] for r in rows if r["epoch"] >= 1} for rows in rng]
    assert by_batch[0] == {key: by_batch[1][key] for key in by_batch[0]}
