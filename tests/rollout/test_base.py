"""The engine interface: stop ids and completion cutting, chunking and its seeds, and the engine registry."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import GenerationConfig

from caopd_pl.rollout import ENGINES, HFEngine
from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine, stop_token_ids


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


# ----------------------------------------------------------------------------------------------------------------
# The base class: chunks, their seeds, the registry
# ----------------------------------------------------------------------------------------------------------------


class RecordingEngine(RolloutEngine):
    """Records each chunk it is given; every rollout names its prompt's first token and its chunk's seed.

    No ``name``: a class that does not set one is not registered (test support, not an engine).
    """

    def __init__(self, config: RolloutConfig, tokenizer, short: bool = False) -> None:
        super().__init__(config, torch.nn.Linear(1, 1), tokenizer)
        self.calls: list[tuple[int, int, int]] = []
        self.short = short

    def generate_chunk(self, prompts, sampling, seed):
        self.calls.append((len(prompts), seed, sampling.num_samples))
        k = sampling.num_samples - self.short
        return [[Rollout([prompt[0], seed], "", True) for _ in range(k)] for prompt in prompts]


def test_generate_chunks_the_prompts_and_seeds_each_chunk_with_its_first_prompts_index(tokenizer):
    engine = RecordingEngine(RolloutConfig(num_samples=4, batch_size=8), tokenizer)
    prompts = [[index] for index in range(5)]

    groups = engine.generate(prompts, seed=100)

    assert engine.calls == [(2, 100, 4), (2, 102, 4), (1, 104, 4)]  # max(1, 8 // 4) prompts a chunk
    assert [[r.token_ids for r in group] for group in groups] == [
        [[index, 100 + index // 2 * 2]] * 4 for index in range(5)
    ]


def test_a_call_of_at_most_one_chunk_is_seeded_with_the_seed_itself(tokenizer):
    config = RolloutConfig(num_samples=8, batch_size=4)
    engine = RecordingEngine(config, tokenizer)
    engine.generate([[1], [2], [3]], seed=7, sampling=replace(config, num_samples=1))  # evaluation: K = 1
    engine.generate([[1], [2]], seed=9)  # 4 // 8 -> one prompt a chunk, at least
    assert engine.calls == [(3, 7, 1), (1, 9, 8), (1, 10, 8)]


def test_an_engine_that_returns_too_few_rollouts_is_caught(tokenizer):
    engine = RecordingEngine(RolloutConfig(num_samples=2), tokenizer, short=True)
    with pytest.raises(RuntimeError, match=r"RecordingEngine.generate_chunk returned groups of sizes \[1\]"):
        engine.generate([[1]], seed=0)


def test_the_progress_bar_counts_prompts_when_asked(tokenizer, capsys):
    engine = RecordingEngine(RolloutConfig(num_samples=1), tokenizer)
    engine.generate([[1], [2]], seed=0)
    assert "rollouts" not in capsys.readouterr().err
    engine.generate([[1], [2]], seed=0, progress=True)
    err = capsys.readouterr().err
    assert "rollouts: 100%" in err and "2/2" in err


def test_defining_an_engine_with_a_name_registers_it():
    assert ENGINES["hf"] is HFEngine and ENGINES["vllm"].__name__ == "VLLMEngine"
    assert "RecordingEngine" not in {engine.__name__ for engine in ENGINES.values()}  # no name: not registered
    with pytest.raises(TypeError):
        ENGINES["mine"] = HFEngine  # read-only: engines register by being defined

    with pytest.raises(TypeError, match="rollout engine name 'hf' of .*Impostor is taken by HFEngine"):

        class Impostor(RecordingEngine):
            name = "hf"

    with pytest.raises(TypeError, match=r"other than \['auto'\]"):

        class Automatic(RecordingEngine):
            name = "auto"

    assert ENGINES["hf"] is HFEngine and "auto" not in ENGINES


def test_an_unknown_engine_is_a_one_line_error_naming_the_key_and_the_engines():
    with pytest.raises(ValueError) as error:
        RolloutConfig(engine="sglang")
    message = str(error.value)
    known = [*ENGINES, "auto"]  # engines other tests define, too
    assert message.startswith(f"data.rollout.engine='sglang' is not a registered rollout engine; choose one of {known}")
    assert "\n" not in message and "define a RolloutEngine subclass (its class path names it)" in message
    assert RolloutConfig(engine="caopd_pl.rollout.hf.HFEngine").engine == "caopd_pl.rollout.hf.HFEngine"
    assert RolloutConfig(engine="auto").engine == "auto"
