"""The Qwen3-style byte-level BPE tokenizer built in code: layout, chat format, every id decodable, save and reload."""

from __future__ import annotations

import random

import pytest

from caopd_pl.models.bpe import QWEN3_ADDED_TOKENS, QWEN3_VOCAB_SIZE, build_qwen3_style_tokenizer
from caopd_pl.models.loading import load_tokenizer
from caopd_pl.templates import prompt_ids

MESSAGES = [
    {"role": "system", "content": "Answer with <answer>X</answer>."},
    {"role": "user", "content": "Which reactant gives CC(=O)Oc1ccccc1C(=O)O? Naïve café, 東京.\nConfidence: 0.5"},
]


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    """The full-vocabulary tokenizer, saved and reloaded by the project's loader (what a run sees)."""
    directory = tmp_path_factory.mktemp("qwen3_tokenizer")
    built = build_qwen3_style_tokenizer()
    built.save_pretrained(directory)
    return built, load_tokenizer(str(directory))


@pytest.mark.slow
def test_special_tokens_sit_at_qwen3_ids(qwen3):
    _, tokenizer = qwen3
    assert len(tokenizer) == QWEN3_VOCAB_SIZE
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token, _ in QWEN3_ADDED_TOKENS}
    assert ids["<|endoftext|>"] == 151_643 and ids["<|im_start|>"] == 151_644 and ids["<|im_end|>"] == 151_645
    assert ids["<think>"] == 151_667 and ids["</think>"] == 151_668
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_renders_like_qwen3(qwen3):
    _, tokenizer = qwen3
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == (
        f"<|im_start|>system\n{MESSAGES[0]['content']}<|im_end|>\n"
        f"<|im_start|>user\n{MESSAGES[1]['content']}<|im_end|>\n<|im_start|>assistant\n"
    )
    no_thinking = tokenizer.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert no_thinking == text + "<think>\n\n</think>\n\n"
    with_answer = MESSAGES + [{"role": "assistant", "content": "<answer>A</answer>"}]
    rendered = tokenizer.apply_chat_template(with_answer, tokenize=False)
    assert rendered.endswith("<|im_start|>assistant\n<answer>A</answer><|im_end|>\n")


def test_reload_keeps_every_id_and_text_round_trips(qwen3):
    built, tokenizer = qwen3
    ids = prompt_ids(tokenizer, MESSAGES)
    assert ids == prompt_ids(built, MESSAGES)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    # Byte-level: non-ASCII text encodes to real merges and decodes back exactly, no unknown token.
    assert (
        tokenizer.decode(tokenizer(MESSAGES[1]["content"], add_special_tokens=False)["input_ids"])
        == (MESSAGES[1]["content"])
    )


def test_every_id_a_random_model_can_emit_decodes_and_keeps_its_length(qwen3):
    _, tokenizer = qwen3
    assert all(token is not None for token in tokenizer.convert_ids_to_tokens(list(range(QWEN3_VOCAB_SIZE))))
    rng = random.Random(0)
    specials = set(tokenizer.all_special_ids)
    sampled = [rng.randrange(QWEN3_VOCAB_SIZE) for _ in range(1024)]
    text = tokenizer.decode(sampled, skip_special_tokens=True)
    kept = [i for i in sampled if i not in specials]
    # A decoded rollout re-tokenises to about its sampled length (byte-level merges may regroup the BPE part).
    assert abs(len(tokenizer(text, add_special_tokens=False)["input_ids"]) - len(kept)) <= 0.05 * len(kept)
    reserved = [i for i in kept if tokenizer.convert_ids_to_tokens(i).startswith("<|reserved_")]
    assert tokenizer(tokenizer.decode(reserved), add_special_tokens=False)["input_ids"] == reserved


def test_small_vocabulary_puts_added_tokens_after_the_bpe():
    tokenizer = build_qwen3_style_tokenizer(vocab_size=1_024, bpe_size=600)
    assert len(tokenizer) == 1_024
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 600
    assert tokenizer.convert_ids_to_tokens(1_023) == "<|reserved_1023|>"


def test_too_small_vocabulary_names_the_fix():
    with pytest.raises(ValueError, match=r"vocab_size=300 cannot hold .* use vocab_size >= 626"):
        build_qwen3_style_tokenizer(vocab_size=300, bpe_size=600)
