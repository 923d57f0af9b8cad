"""Stop ids and completion cutting, shared by both engines."""

from __future__ import annotations

from transformers import GenerationConfig

from caopd_pl.rollout.base import Rollout, stop_token_ids


def test_stop_ids_are_the_tokenizers_eos_then_the_generation_configs(tokenizer):
    eos = tokenizer.eos_token_id
    assert stop_token_ids(tokenizer) == [eos]
    assert stop_token_ids(tokenizer, GenerationConfig()) == [eos]
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=eos)) == [eos]
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=[0, eos, 0])) == [eos, 0]  # Qwen: im_end, endoftext


def test_a_completion_is_cut_after_its_first_stop_id(tokenizer):
    a, b = tokenizer.convert_tokens_to_ids(["a", "b"])
    eos, endoftext = tokenizer.eos_token_id, tokenizer.pad_token_id
    stops = [eos, endoftext]

    cut = Rollout.from_ids([a, endoftext, b, eos, endoftext], tokenizer, stops)
    assert cut.token_ids == [a, endoftext] and cut.finished and cut.text == "a"
    ran_out = Rollout.from_ids([a, b, a], tokenizer, stops)
    assert ran_out.token_ids == [a, b, a] and not ran_out.finished and ran_out.text == "aba"
    assert Rollout.from_ids([a, endoftext], tokenizer, [eos]).token_ids == [a, endoftext]  # not a stop id: kept
