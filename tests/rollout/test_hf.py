"""The Hugging Face engine samples with exactly ``RolloutConfig``, whatever the checkpoint's generation config says,
and draws the rollouts the DataModule and evaluation drew before engines chunked their own calls."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from transformers import GenerationConfig

from caopd_pl.rollout.base import Rollout, RolloutConfig
from caopd_pl.rollout.hf import HFEngine, sampling_config

GREEDY = RolloutConfig(num_samples=1, temperature=0.0, max_new_tokens=24)
SAMPLING = RolloutConfig(num_samples=4, temperature=1.0, top_p=0.9, max_new_tokens=24)
TEXTS = ["12+3=", "hello world", "What is 7*8?", "a", "Confidence:", "The answer is 42.\n", "xyz", "9*9=?", "b+c"]


def token_ids(groups) -> list[list[list[int]]]:
    return [[rollout.token_ids for rollout in group] for group in groups]


def test_greedy_is_plain_argmax_decoding_and_stops_on_either_eos(
    hostile_student, hostile_checkpoint, tokenizer, prompt_ids, reference_decode
):
    # The checkpoint asks for repetition_penalty 1.5 and sampling; the engine must decode the plain argmax path and
    # stop at the first of the tokenizer's EOS and the generation config's second EOS id.
    rollouts = [group[0] for group in HFEngine(GREEDY, hostile_student, tokenizer).generate(prompt_ids, seed=0)]

    stops = hostile_checkpoint.eos_ids
    assert [r.token_ids for r in rollouts] == [reference_decode(hostile_student, p, stops, 24) for p in prompt_ids]
    second = rollouts[0]
    assert second.finished and second.token_ids[-1] == stops[1] and len(second.token_ids) >= 4
    for rollout in rollouts:
        assert rollout.finished == (rollout.token_ids[-1] in stops)
        assert rollout.finished or len(rollout.token_ids) == 24
        assert rollout.text == tokenizer.decode(rollout.token_ids, skip_special_tokens=True)
    assert hostile_student.generation_config.repetition_penalty == 1.5  # the student's own config is left as it was


def test_sampling_is_identical_with_and_without_the_checkpoints_sampling_defaults(
    hostile_student, hostile_checkpoint, tokenizer, prompt_ids
):
    plain = copy.deepcopy(hostile_student)  # same weights and stop ids, no sampling defaults
    plain.generation_config = GenerationConfig(
        eos_token_id=hostile_checkpoint.eos_ids, pad_token_id=tokenizer.pad_token_id
    )
    hostile = HFEngine(SAMPLING, hostile_student, tokenizer).generate(prompt_ids, seed=7)
    neutral = HFEngine(SAMPLING, plain, tokenizer).generate(prompt_ids, seed=7)

    assert token_ids(hostile) == token_ids(neutral)
    # And it is sampling at temperature 1 (not the checkpoint's 0.1 with top-k 3): K distinct samples per prompt.
    assert sum(len({tuple(ids) for ids in group}) for group in token_ids(hostile)) > 2 * len(prompt_ids)


def test_greedy_with_k_samples_returns_k_copies(tiny_model, tokenizer, prompt_ids, reference_decode):
    engine = HFEngine(RolloutConfig(num_samples=3, temperature=0), tiny_model, tokenizer)
    groups = engine.generate(prompt_ids[:2], seed=0)
    assert [len(group) for group in groups] == [3, 3]
    for prompt, group in zip(prompt_ids, groups):
        want = reference_decode(tiny_model.eval(), prompt, [tokenizer.eos_token_id], 64)
        assert [r.token_ids for r in group] == [want] * 3


def test_decodes_in_eval_mode_and_restores_the_mode(tiny_model, tokenizer, prompt_ids, reference_decode):
    for module in tiny_model.modules():  # dropout that would change every greedy step if it were active
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.9
    tiny_model.train()
    groups = HFEngine(GREEDY, tiny_model, tokenizer).generate(prompt_ids, seed=0)
    assert tiny_model.training
    want = [reference_decode(tiny_model.eval(), p, [tokenizer.eos_token_id], 24) for p in prompt_ids]
    assert [group[0].token_ids for group in groups] == want


def test_generation_leaves_the_global_random_state_alone(tiny_model, tokenizer, prompt_ids):
    before = torch.random.get_rng_state()
    HFEngine(SAMPLING, tiny_model, tokenizer).generate(prompt_ids, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)


# ----------------------------------------------------------------------------------------------------------------
# The rollouts of before: the DataModule's chunk loop and evaluation's one call per batch
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def student(tiny_model) -> torch.nn.Module:
    """The tiny model with larger weights: long, prompt-dependent completions that any change of seed would move."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in tiny_model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return tiny_model


@torch.no_grad()
def seeded_call(model, tokenizer, prompts: list[list[int]], sampling: RolloutConfig, seed: int) -> list[list[Rollout]]:
    """One seeded, left-padded ``generate`` over all of ``prompts``: what one engine call drew before engines chunked.

    The DataModule made one such call per chunk of ``batch_size // K`` prompts, seeded with ``seed + start``;
    evaluation made one per batch, seeded with ``rollout.seed + batch_idx``.
    """
    stops = [tokenizer.eos_token_id]
    copies = sampling.num_samples if sampling.temperature == 0 else 1
    k, pad = sampling.num_samples // copies, tokenizer.pad_token_id
    config = sampling_config(k, sampling.temperature, sampling.top_p, sampling.max_new_tokens, stops, pad)
    width = max(map(len, prompts))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])  # (B, P)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])  # (B, P)
    was_training = model.training
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        output = model.eval().generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    model.train(was_training)
    rows = [Rollout.from_ids(row.tolist(), tokenizer, stops) for row in output[:, width:]]  # B * k rows
    return [rows[i * k : (i + 1) * k] * copies for i in range(len(prompts))]


@pytest.mark.parametrize("temperature", [0.9, 0.0])
def test_an_epochs_rollouts_are_the_datamodules_chunk_by_chunk_rollouts(student, tokenizer, temperature):
    config = RolloutConfig(num_samples=4, temperature=temperature, top_p=0.9, max_new_tokens=16, batch_size=8)
    prompts = [tokenizer(text)["input_ids"] for text in TEXTS]
    seed = config.seed + 10_007 * 2 + 101  # epoch 2 on rank 1, as the DataModule seeds it

    got = HFEngine(config, student, tokenizer).generate(prompts, seed=seed)

    per_call = config.batch_size // config.num_samples  # 2 prompts a chunk: 5 chunks, the last one short
    want = []
    for start in range(0, len(prompts), per_call):
        want += seeded_call(student, tokenizer, prompts[start : start + per_call], config, seed + start)
    assert token_ids(got) == token_ids(want)
    assert len({tuple(ids) for group in token_ids(got) for ids in group}) > len(prompts) // 2  # prompt-dependent


@pytest.mark.parametrize("temperature", [0.7, 0.0])
def test_an_evaluation_batch_is_one_call_seeded_with_the_batch_seed(student, tokenizer, temperature):
    config = RolloutConfig(num_samples=4, temperature=0.9, max_new_tokens=16, batch_size=16, seed=5)
    evaluation = replace(config, num_samples=1, temperature=temperature, top_p=1.0, max_new_tokens=12)
    prompts = [tokenizer(text)["input_ids"] for text in TEXTS]  # 9 <= 16 // 1: one chunk
    seed = config.seed + 3  # batch 3

    got = HFEngine(config, student, tokenizer).generate(prompts, seed=seed, sampling=evaluation)

    assert token_ids(got) == token_ids(seeded_call(student, tokenizer, prompts, evaluation, seed))
    assert [len(group) for group in got] == [1] * len(prompts)
