"""A new rollout engine is one class: defined here, selected by ``data.rollout.engine``, with no edit elsewhere.

``LoopEngine`` decodes greedily with a plain Python loop over the model's forward pass (no cache, no
``generate``): slow, but a complete engine. It must draw the Hugging Face engine's greedy completions, called
directly and when a run's config names it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from cli_runs import run_test

from caopd_pl.rollout import ENGINES, HFEngine, make_engine
from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine

TEXTS = ["12+3=", "hello world", "What is 7*8?", "a", "Confidence:"]


class LoopEngine(RolloutEngine):
    """Greedy decoding, one full forward per new token; K copies of each prompt's completion.

    The model decodes in the mode it is in (the tiny models here have no dropout).
    """

    name = "python-loop"

    @torch.no_grad()
    def generate_chunk(self, prompts: list[list[int]], sampling: RolloutConfig, seed: int) -> list[list[Rollout]]:
        if sampling.temperature != 0:
            raise ValueError(f"data.rollout.engine: {self.name} decodes greedily; set data.rollout.temperature: 0")
        groups = []
        for prompt in prompts:
            ids = list(prompt)
            while len(ids) - len(prompt) < sampling.max_new_tokens:
                ids.append(int(self.model(torch.tensor([ids])).logits[0, -1].argmax()))  # argmax of (V,)
                if ids[-1] in self.stop_ids:
                    break
            groups.append([Rollout.from_ids(ids[len(prompt) :], self.tokenizer, self.stop_ids)] * sampling.num_samples)
        return groups


def test_the_engine_is_registered_and_selected_by_its_name(tiny_model, tokenizer):
    config = RolloutConfig(engine="python-loop", num_samples=2, temperature=0.0, max_new_tokens=8)
    assert ENGINES["python-loop"] is LoopEngine
    engine = make_engine(config, tiny_model, tokenizer)
    assert type(engine) is LoopEngine and engine.config is config


def test_it_draws_the_hugging_face_engines_greedy_completions(tiny_model, tokenizer):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights: completions that are long and differ between prompts
        for param in tiny_model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    tiny_model.eval()
    prompts = [tokenizer(text)["input_ids"] for text in TEXTS]
    config = RolloutConfig(num_samples=2, temperature=0.0, max_new_tokens=16, batch_size=4)  # chunks of 2 prompts

    loop = make_engine(replace(config, engine="python-loop"), tiny_model, tokenizer)
    got = loop.generate(prompts, seed=0)
    want = HFEngine(config, tiny_model, tokenizer).generate(prompts, seed=0)

    ids = [[rollout.token_ids for rollout in group] for group in got]
    assert ids == [[rollout.token_ids for rollout in group] for group in want]
    assert [[r.finished for r in group] for group in got] == [[r.finished for r in group] for group in want]
    assert len({tuple(group[0]) for group in ids}) > 1 and all(len(group) == 2 for group in ids)


@pytest.mark.slow
def test_a_run_whose_config_names_it_tests_with_it(tmp_path, hostile_checkpoint):
    hf = run_test(tmp_path / "hf", hostile_checkpoint.path, "hf")
    loop = run_test(tmp_path / "loop", hostile_checkpoint.path, "python-loop")

    assert type(hf.engine) is HFEngine and type(loop.engine) is LoopEngine
    assert loop.records == hf.records
    completions = [record["completion"] for record in hf.records]
    assert len(completions) == 8 and len(set(completions)) > 1  # prompt-dependent completions, compared in full
