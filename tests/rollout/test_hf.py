"""The Hugging Face engine samples with exactly ``RolloutConfig``, whatever the checkpoint's generation config says."""

from __future__ import annotations

import copy

import torch
from transformers import GenerationConfig

from caopd_pl.rollout.base import RolloutConfig
from caopd_pl.rollout.hf import HFEngine

GREEDY = RolloutConfig(num_samples=1, temperature=0.0, max_new_tokens=24)
SAMPLING = RolloutConfig(num_samples=4, temperature=1.0, top_p=0.9, max_new_tokens=24)


def token_ids(groups) -> list[list[list[int]]]:
    return [[rollout.token_ids for rollout in group] for group in groups]


def test_greedy_is_plain_argmax_decoding_and_stops_on_either_eos(
    hostile_student, hostile_checkpoint, tokenizer, prompt_ids, reference_decode
):
    # The checkpoint asks for repetition_penalty 1.5 and sampling; the engine must decode the plain argmax path and
    # stop at the first of the tokenizer's EOS and the generation config's second EOS id.
    rollouts = [group[0] for group in HFEngine(hostile_student, tokenizer).generate(prompt_ids, GREEDY, seed=0)]

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
    hostile = HFEngine(hostile_student, tokenizer).generate(prompt_ids, SAMPLING, seed=7)
    neutral = HFEngine(plain, tokenizer).generate(prompt_ids, SAMPLING, seed=7)

    assert token_ids(hostile) == token_ids(neutral)
    # And it is sampling at temperature 1 (not the checkpoint's 0.1 with top-k 3): K distinct samples per prompt.
    assert sum(len({tuple(ids) for ids in group}) for group in token_ids(hostile)) > 2 * len(prompt_ids)


def test_greedy_with_k_samples_returns_k_copies(tiny_model, tokenizer, prompt_ids, reference_decode):
    groups = HFEngine(tiny_model, tokenizer).generate(prompt_ids[:2], RolloutConfig(num_samples=3, temperature=0), 0)
    assert [len(group) for group in groups] == [3, 3]
    for prompt, group in zip(prompt_ids, groups):
        want = reference_decode(tiny_model.eval(), prompt, [tokenizer.eos_token_id], 64)
        assert [r.token_ids for r in group] == [want] * 3


def test_decodes_in_eval_mode_and_restores_the_mode(tiny_model, tokenizer, prompt_ids, reference_decode):
    for module in tiny_model.modules():  # dropout that would change every greedy step if it were active
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.9
    tiny_model.train()
    groups = HFEngine(tiny_model, tokenizer).generate(prompt_ids, GREEDY, seed=0)
    assert tiny_model.training
    want = [reference_decode(tiny_model.eval(), p, [tokenizer.eos_token_id], 24) for p in prompt_ids]
    assert [group[0].token_ids for group in groups] == want


def test_generation_leaves_the_global_random_state_alone(tiny_model, tokenizer, prompt_ids):
    before = torch.random.get_rng_state()
    HFEngine(tiny_model, tokenizer).generate(prompt_ids, SAMPLING, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
