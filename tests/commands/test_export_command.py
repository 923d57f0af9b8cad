"""``python -m caopd_pl export``: a trained checkpoint becomes a Hugging Face directory that loads as it is."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from test_precision import local_model_config
from transformers import AutoModelForCausalLM, GenerationConfig

from caopd_pl.__main__ import main
from caopd_pl.models.loading import load_tokenizer
from caopd_pl.module import CaOPDModule
from caopd_pl.rollout.base import RolloutConfig, stop_token_ids
from caopd_pl.rollout.hf import HFEngine
from caopd_pl.tasks.arithmetic import ArithmeticTask
from caopd_pl.templates import prompt_ids


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short fit of a tiny Qwen3 loaded from a local dir: (checkpoint, base dir, run root)."""
    root = tmp_path_factory.mktemp("run")
    config, base = local_model_config(
        root, max_epochs=1, scale=0.3, ema_rate=0.5
    )  # a fast teacher: visibly not the student
    assert main(["fit", "--config", str(config)]) == 0
    return root / "checkpoints/last.ckpt", base, root


def greedy(model, tokenizer) -> list[list[int]]:
    """Greedy completions of four test prompts; they differ, so matching them compares the models' functions."""
    prompts = [prompt_ids(tokenizer, e.student_messages()) for e in ArithmeticTask(num_test=4).split("test")[:4]]
    engine = HFEngine(RolloutConfig(num_samples=1, temperature=0.0, max_new_tokens=12), model, tokenizer)
    completions = [group[0].token_ids for group in engine.generate(prompts, seed=0)]
    assert len({tuple(c) for c in completions}) > 1 and all(len(set(c)) > 2 for c in completions)
    return completions


def reloaded(out):
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = load_tokenizer(str(out))
    return model, tokenizer


@pytest.mark.slow
def test_export_reloads_with_transformers_and_decodes_like_the_student(trained, tmp_path):
    ckpt, _, _ = trained
    out = tmp_path / "student"
    assert main(["export", "--ckpt_path", str(ckpt), "--out", str(out)]) == 0

    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    model, tokenizer = reloaded(out)
    module = CaOPDModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert tokenizer.chat_template == module.tokenizer.chat_template
    assert tokenizer.get_vocab() == module.tokenizer.get_vocab()
    for name, value in module.student.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    expected_stops = stop_token_ids(module.tokenizer, module.student.generation_config)
    assert GenerationConfig.from_pretrained(out).eos_token_id in (expected_stops, expected_stops[0])
    assert greedy(model, tokenizer) == greedy(module.student, module.tokenizer)


@pytest.mark.slow
def test_export_teacher_writes_the_ema_weights(trained, tmp_path):
    ckpt, _, _ = trained
    assert main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "teacher"), "--teacher"]) == 0

    teacher, _ = reloaded(tmp_path / "teacher")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    differs = False
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, state[f"teacher.{name}"]), name
        differs |= not torch.equal(value, state[f"student.{name}"])
    assert differs  # after training, the EMA teacher is not the student


@pytest.mark.slow
def test_moved_base_model_fails_in_one_line_then_base_overrides(trained, tmp_path, capsys):
    ckpt, base, root = trained
    moved = root / "moved_base"
    shutil.move(base, moved)
    try:
        assert main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "a")]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and str(base) in error and "--base" in error
        assert main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "b"), "--base", str(moved)]) == 0
        assert (tmp_path / "b" / "model.safetensors").is_file()
        config = tmp_path / "moved.yaml"  # a run config's model: section overrides the checkpoint's
        config.write_text(yaml.safe_dump({"model": {"model": {"name_or_path": str(moved)}}}))
        command = ["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "c"), "--config", str(config)]
        assert main([*command, "--dtype", "bfloat16"]) == 0
        assert AutoModelForCausalLM.from_pretrained(tmp_path / "c").dtype == torch.bfloat16
    finally:
        shutil.move(moved, base)


def test_missing_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["export", "--ckpt_path", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--ckpt_path" in error and "nope.ckpt" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_loads_the_export_and_decodes_like_the_student(tmp_path, monkeypatch):
    from vllm import LLM, SamplingParams

    config, _ = local_model_config(tmp_path, width=64, scale=0.3)  # vLLM's CPU attention needs a head size of 32
    assert main(["fit", "--config", str(config)]) == 0
    ckpt, out = tmp_path / "checkpoints/last.ckpt", tmp_path / "export"
    assert main(["export", "--ckpt_path", str(ckpt), "--out", str(out)]) == 0

    module = CaOPDModule.load_from_checkpoint(ckpt, map_location="cpu")
    prompts = [prompt_ids(module.tokenizer, e.student_messages()) for e in ArithmeticTask(num_test=4).split("test")[:4]]
    want = greedy(module.student, module.tokenizer)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # As a user would: the directory alone (its generation_config's stop ids included), fp32 on CPU.
    llm = LLM(
        model=str(out),
        dtype="float32",
        enforce_eager=True,
        enable_chunked_prefill=False,
        seed=0,
        kv_cache_memory_bytes=64 << 20,
        max_model_len=512,
    )
    try:
        outputs = llm.generate(
            [{"prompt_token_ids": p} for p in prompts], SamplingParams(temperature=0.0, max_tokens=12), use_tqdm=False
        )
    finally:
        del llm
    assert [list(o.outputs[0].token_ids) for o in outputs] == want


def test_a_checkpoint_written_through_the_python_api_exports(tmp_path):
    # Built in Python, the module's settings are saved as the dataclasses themselves (the CLI saves dicts and its
    # instantiator): export used to fail with "'dict' object has no attribute 'name_or_path'".
    from caopd_pl.models.loading import ModelConfig
    from caopd_pl.models.lora import LoraSettings
    from caopd_pl.models.tiny import TinyModelConfig
    from caopd_pl.readouts import ReadoutConfig

    spec = TinyModelConfig(architecture="qwen3", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    module = CaOPDModule(
        ModelConfig(tiny=spec), readout=ReadoutConfig(report=("greedy",)), lora=LoraSettings(rank=2, alpha=4.0)
    )
    assert isinstance(module.hparams["model"], ModelConfig)
    ckpt = tmp_path / "api.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    assert main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert exported.config.num_hidden_layers == 1 and not any("lora" in key for key in exported.state_dict())


@pytest.mark.slow
def test_the_export_decodes_as_the_model_was_evaluated_not_with_the_bases_sampling_defaults(tmp_path):
    # An instruct base ships sampling defaults (Qwen3: temperature 0.6, top-k 20) that training and evaluation
    # ignore; the export used to keep them, so a plain generate() answered otherwise than the evaluated model.
    config, base = local_model_config(tmp_path, max_epochs=1, scale=0.3)
    hostile = GenerationConfig.from_pretrained(base)
    hostile.update(do_sample=True, temperature=0.6, top_k=20, top_p=0.95, repetition_penalty=1.3)
    hostile.save_pretrained(base)
    assert main(["fit", "--config", str(config)]) == 0
    out = tmp_path / "export"
    assert main(["export", "--ckpt_path", str(tmp_path / "checkpoints/last.ckpt"), "--out", str(out)]) == 0

    saved = GenerationConfig.from_pretrained(out)
    assert not saved.do_sample and saved.repetition_penalty in (None, 1.0) and saved.max_new_tokens == 8
    model, tokenizer = reloaded(out)
    prompts = [prompt_ids(tokenizer, e.student_messages()) for e in ArithmeticTask(num_test=4).split("test")[:3]]
    for prompt in prompts:  # generate() with no arguments: what a user of the export gets
        plain = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
        engine = HFEngine(RolloutConfig(num_samples=1, temperature=0.0, max_new_tokens=8), model, tokenizer)
        (greedy_rollout,) = engine.generate([prompt], seed=0)[0]
        assert plain[0, len(prompt) :].tolist()[: len(greedy_rollout.token_ids)] == greedy_rollout.token_ids
