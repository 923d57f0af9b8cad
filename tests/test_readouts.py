"""Confidence readouts (:mod:`caopd_pl.readouts`): the expected readout against brute force on three tokenizers,
the sampled readout's seeding, their configuration, and the readouts through the module and the real ``test`` CLI.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import random
import socket
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import redraw, small_config
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from caopd_pl.__main__ import main
from caopd_pl.confidence import parse_confidence
from caopd_pl.data import collate_prompts
from caopd_pl.models.bpe import QWEN3_VOCAB_SIZE, build_qwen3_style_tokenizer
from caopd_pl.models.loading import ModelConfig, load_model
from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.module import CaOPDModule
from caopd_pl.readouts import (
    CANDIDATE_VALUES,
    ReadoutConfig,
    available_readouts,
    candidate_log_probs,
    expected_confidence,
    expected_readouts,
    sampled_confidence,
    with_readout,
)
from caopd_pl.rollout.base import RolloutConfig
from caopd_pl.rollout.hf import HFEngine
from caopd_pl.rollout.shared import SharedEngine
from caopd_pl.sharding import shard_model
from caopd_pl.tasks.arithmetic import ArithmeticTask
from caopd_pl.templates import prompt_ids, revised_completion_ids

TINY = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
QUESTION = [{"role": "user", "content": "What is 12+3? End with your confidence."}]
WITH_CONFIDENCE = "The answer is 15.\nConfidence: 0.9"
ANSWER_ONLY = "The answer is 15."
CONFIDENCE_LINE = "\nConfidence: 0.05"


# ---- tokenizers and models built in code ---------------------------------------------------------------------------


def merging_bpe() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE (space glued to the next word, digit runs kept together) trained on confidence
    lines, so common values merge (``00``, ``25``) and rare ones do not (``0``, ``7``): candidates differ in length."""
    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        a, b = rng.randrange(100), rng.randrange(100)
        value = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, 0.9, 0.1]) if rng.random() < 0.7 else rng.randrange(101) / 100
        lines.append(f"What is {a}+{b}? The answer is {a + b}.\nConfidence: {value:.2f}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend.train_from_iterator(
        lines, trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False)
    )
    backend.add_special_tokens([AddedToken("<|endoftext|>", special=True), AddedToken("<|im_end|>", special=True)])
    template = (
        "{%- for m in messages %}{{- m['role'] + ': ' + m['content'] + '\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- 'assistant: ' }}{%- endif %}"
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=template,
        clean_up_tokenization_spaces=False,
    )


def model_and_tokenizer(kind: str) -> tuple[torch.nn.Module, object]:
    """An eval-mode model with a spread-out distribution over the candidates, and its tokenizer.

    ``char``: the embedded default (character tokenizer); ``qwen3_bpe``: the Qwen3-style byte-level BPE of
    :mod:`caopd_pl.models.bpe` (digits split one by one, ``Confidence`` and ``:`` apart); ``merging_bpe``: numbers
    merge into multi-digit tokens; ``qwen3_real_vocab``: the Qwen3 architecture (untied output layer) at Qwen3's
    151,936-row vocabulary with the Qwen3-style tokenizer laid out at Qwen3's ids, the shape a researcher's checkpoint
    has. Weights are redrawn (seeded) so that the candidates are neither uniform nor one.
    """
    if kind == "char":
        model, tokenizer = load_model(ModelConfig(name_or_path="tiny"))
    elif kind == "qwen3_real_vocab":
        tokenizer = build_qwen3_style_tokenizer(QWEN3_VOCAB_SIZE, 1_000)
        spec = replace(TINY, architecture="qwen3", tie_word_embeddings=False)
        model = build_tiny_model(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    else:
        tokenizer = build_qwen3_style_tokenizer(1_100, 1_000) if kind == "qwen3_bpe" else merging_bpe()
        model = build_tiny_model(TINY, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    redraw(model, seed=1, scale=0.1 if kind == "char" else 0.2)  # the BPE models are narrower (width 32)
    return model.eval(), tokenizer


@pytest.fixture(scope="module", params=["char", "qwen3_bpe", "merging_bpe", "qwen3_real_vocab"])
def setup(request):
    return request.param, *model_and_tokenizer(request.param)


def brute_force_log_probs(model: torch.nn.Module, prompt: list[int], candidates: list[list[int]]) -> torch.Tensor:
    """(N,) log P(candidate | prompt): one full forward per candidate, no cache, every candidate token summed."""
    scores = []
    with torch.no_grad():
        for candidate in candidates:
            ids = torch.tensor([prompt + candidate])  # (1, P + C)
            logits = model(input_ids=ids, use_cache=False).logits[0].double().log_softmax(-1)  # (P + C, V)
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(candidate) - 1)  # predict each candidate token
            scores.append(logits[positions, torch.tensor(candidate)].sum())
    return torch.stack(scores)


def candidates_of(tokenizer, completion: str) -> list[list[int]]:
    return [revised_completion_ids(tokenizer, completion, value) for value in CANDIDATE_VALUES]


def suffix_lengths(candidates: list[list[int]]) -> set[int]:
    """The lengths of the candidates after their longest common token prefix."""
    shared = 0
    while all(len(c) > shared and c[shared] == candidates[0][shared] for c in candidates):
        shared += 1
    return {len(c) - shared for c in candidates}


# ---- expected readout ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("completion", [WITH_CONFIDENCE, ANSWER_ONLY], ids=["confidence_line", "answer_only"])
def test_expected_readout_is_the_brute_force_expectation_over_every_candidate(setup, completion):
    kind, model, tokenizer = setup
    prompt = prompt_ids(tokenizer, QUESTION)
    candidates = candidates_of(tokenizer, completion)
    brute = brute_force_log_probs(model, prompt, candidates).softmax(0)  # (101,)
    entropy = -(brute * brute.log()).sum().item()
    assert 1.0 < entropy < math.log(len(CANDIDATE_VALUES)) - 0.5, f"{kind}: degenerate candidates ({entropy:.2f})"

    batched = candidate_log_probs(model, prompt, candidates)
    assert batched.dtype == torch.float64 and batched.shape == (len(CANDIDATE_VALUES),)
    torch.testing.assert_close(batched.softmax(0), brute, atol=1e-6, rtol=0)
    expected = sum(value * p for value, p in zip(CANDIDATE_VALUES, brute.tolist()))
    assert expected_confidence(model, tokenizer, prompt, completion) == pytest.approx(expected, abs=1e-6)


def test_the_three_tokenizers_split_the_confidence_line_differently():
    # What makes the brute-force comparison above a test of tokenizer-agnosticism, not one code path three times.
    tokenizers = {kind: model_and_tokenizer(kind)[1] for kind in ("char", "qwen3_bpe", "merging_bpe")}
    pieces = {
        kind: tuple(tok.convert_ids_to_tokens(tok(CONFIDENCE_LINE, add_special_tokens=False)["input_ids"]))
        for kind, tok in tokenizers.items()
    }
    assert len(set(pieces.values())) == 3, pieces
    lengths = {kind: suffix_lengths(candidates_of(tok, ANSWER_ONLY)) for kind, tok in tokenizers.items()}
    assert lengths["char"] == lengths["qwen3_bpe"] == {5}  # digit . digit digit EOS, after the shared ' ' or 'Ġ'
    assert len(lengths["merging_bpe"]) > 1, lengths  # ' 0' '.' '00' EOS vs ' 0' '.' '0' '7' EOS: padded batch


def test_candidates_differing_in_their_last_token_or_one_a_prefix_of_another_are_scored_exactly():
    model, tokenizer = model_and_tokenizer("char")
    prompt = prompt_ids(tokenizer, QUESTION)
    body = tokenizer("The answer is 1", add_special_tokens=False)["input_ids"]
    digits = [tokenizer.convert_tokens_to_ids(d) for d in "0123456789"]
    cases = {
        "one_token_suffix": [body + [d] for d in digits],  # no second forward: the shared context's next token
        "prefix_of_another": [body, body + [digits[5]], body + [digits[5], digits[0]]],
    }
    for name, candidates in cases.items():
        brute = brute_force_log_probs(model, prompt, candidates).softmax(0)
        torch.testing.assert_close(candidate_log_probs(model, prompt, candidates).softmax(0), brute, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "candidates",
    [[], [[5, 6]], [[5, 6], [5, 6]], [[5, 6], [5, 7], [5, 6]], [[5, 6], []]],
    ids=["none", "one", "duplicate", "duplicate_of_three", "empty"],
)
def test_candidate_log_probs_refuses_fewer_than_two_distinct_non_empty_candidates(candidates):
    model, _ = model_and_tokenizer("char")
    with pytest.raises(ValueError, match="at least two distinct, non-empty candidates"):
        candidate_log_probs(model, [1, 2, 3], candidates)


def test_expected_readout_of_a_bf16_model_is_close_to_the_fp32_one():
    model, tokenizer = model_and_tokenizer("char")
    prompt = prompt_ids(tokenizer, QUESTION)
    candidates = candidates_of(tokenizer, WITH_CONFIDENCE)
    low = copy.deepcopy(model).to(torch.bfloat16)
    full_p = candidate_log_probs(model, prompt, candidates).softmax(0)
    low_scores = candidate_log_probs(low, prompt, candidates)
    assert low_scores.dtype == torch.float64 and torch.isfinite(low_scores).all()
    # bf16 keeps 8 mantissa bits: logits move by ~1e-2 relative; the candidates' distribution by a few percent.
    assert 0.5 * (low_scores.softmax(0) - full_p).abs().sum() < 0.1  # total variation
    fp32 = expected_confidence(model, tokenizer, prompt, WITH_CONFIDENCE)
    assert expected_confidence(low, tokenizer, prompt, WITH_CONFIDENCE) == pytest.approx(fp32, abs=0.02)


# ---- sampled readout, and the readouts through the module -----------------------------------------------------------


def test_sampled_confidence_means_the_stated_values_a_missing_one_reading_zero():
    assert sampled_confidence(["8\nConfidence: 0.2", "8\nConfidence: 0.6"]) == pytest.approx(0.4)
    assert sampled_confidence(["8\nConfidence: 0.2", "8", "Confidence: none", "8\nConfidence: 80%"]) == pytest.approx(
        0.25
    )  # the convention of every readout: a confidence not stated reads 0 (it used to be left out of the mean)
    assert sampled_confidence(["8", "no confidence here"]) == 0.0
    assert sampled_confidence([]) == 0.0


def test_every_readout_reads_zero_for_an_answer_that_states_no_confidence(speaking):
    # One convention (caopd_pl.readouts): the expected readout used to append a confidence line to such an answer
    # and report a confident-looking value for a model that states none.
    module, prompts, _ = speaking
    texts = ["8", "8\nConfidence: 0.5"]
    values = module.evaluator.read_confidence(prompts[:2], texts)
    assert values["greedy"] == [0.0, 0.5]
    assert values["expected"][0] == 0.0 and 0.0 < values["expected"][1] < 1.0
    assert expected_confidence(module.student, module.tokenizer, prompts[0], texts[0]) > 0.0  # what it read before


def speaking_module(
    readout: ReadoutConfig, spec: TinyModelConfig = TINY, engine: str = "hf"
) -> tuple[CaOPDModule, list[list[int]], list]:
    """A tiny module fine-tuned (a second, seeded) to end its answers with ``Confidence: 0.20``, ``0.50`` or ``0.80``
    at random, so sampled completions state different values; its four test prompts and their examples."""
    task = ArithmeticTask(levels=["1+1"], ood_levels=[], num_train=4, num_val=2, num_test=4)
    shared = SharedEngine(RolloutConfig(engine=engine, num_samples=2, temperature=0.7, max_new_tokens=2, seed=5))
    module = CaOPDModule(
        ModelConfig(tiny=spec), eval_max_new_tokens=12, readout=readout, task=task, shared_engine=shared
    )
    examples = task.split("test")
    prompts = [prompt_ids(module.tokenizer, e.student_messages()) for e in examples]
    tokenizer, model, rng = module.tokenizer, module.student, random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        rows = [rng.randrange(len(prompts)) for _ in range(16)]
        targets = [
            revised_completion_ids(tokenizer, str(examples[i].reference), rng.choice([0.2, 0.5, 0.8])) for i in rows
        ]
        sequences = [prompts[i] + t for i, t in zip(rows, targets)]
        width = max(map(len, sequences))
        ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in sequences])  # (B, T)
        mask = torch.tensor([[len(prompts[i]) <= j < len(s) for j in range(1, width)] for i, s in zip(rows, sequences)])
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
        loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")[mask].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return module, prompts, examples


@pytest.fixture(scope="module")
def speaking():
    torch.manual_seed(0)
    return speaking_module(ReadoutConfig(primary="sampled", report=["greedy", "expected"], num_samples=6))


def test_sampled_readout_is_seeded_by_the_batch_and_is_the_mean_over_the_engines_samples(speaking):
    module, prompts, _ = speaking
    texts = [group[0].text for group in module.evaluator.decode(prompts, seed=3)]
    rng_before = torch.get_rng_state()
    first = module.evaluator.read_confidence(prompts, texts, batch_idx=3)
    again = module.evaluator.read_confidence(prompts, texts, batch_idx=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # training's random stream is not drawn from
    assert first == again and list(first) == ["sampled", "greedy", "expected"]

    # Independently: a fresh engine on the same weights, the documented seed (data.rollout.seed + 1_000_003 + batch).
    config = module.shared_engine.config
    sampling = RolloutConfig(num_samples=6, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=config.seed)
    groups = HFEngine(sampling, module.student, module.tokenizer).generate(prompts, seed=5 + 1_000_003 + 3)
    parsed = [[parse_confidence(r.text) for r in group] for group in groups]
    assert sum(p.parsed for group in parsed for p in group) >= 12  # the model states a confidence, mostly
    means = [sum(p.value if p.parsed else 0.0 for p in group) / len(group) for group in parsed]  # unstated: 0
    assert first["sampled"] == pytest.approx(means, abs=1e-12)
    assert len({round(v, 6) for v in first["sampled"]}) > 1  # sampled, not one value for every prompt
    assert first["greedy"] == [parse_confidence(t).value for t in texts]
    other = module.evaluator.read_confidence(prompts, texts, batch_idx=4)["sampled"]
    assert other != first["sampled"]  # another batch, other samples


@pytest.mark.vllm
@pytest.mark.slow
def test_sampled_readout_through_vllm_is_reproducible_and_the_mean_over_its_samples():
    # vLLM's CPU attention needs a head size of 32 or more: width 64, 2 heads.
    spec = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
    torch.manual_seed(0)
    readout = ReadoutConfig(primary="sampled", report=["greedy"], num_samples=6)
    module, prompts, _ = speaking_module(readout, spec, engine="vllm")
    try:
        texts = [group[0].text for group in module.evaluator.decode(prompts, seed=3)]
        first = module.evaluator.read_confidence(prompts, texts, batch_idx=3)["sampled"]
        assert type(module.shared_engine.engine).__name__ == "VLLMEngine"
        assert module.evaluator.read_confidence(prompts, texts, batch_idx=3)["sampled"] == first
        sampling = RolloutConfig(engine="vllm", num_samples=6, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=5)
        groups = module.shared_engine.synced().generate(prompts, seed=5 + 1_000_003 + 3, sampling=sampling)
        assert first == pytest.approx([sampled_confidence([r.text for r in group]) for group in groups], abs=1e-12)
        assert sum(parse_confidence(r.text).parsed for group in groups for r in group) >= 12
        assert len({round(v, 6) for v in first}) > 1
    finally:
        module.shared_engine.close()


def test_records_carry_every_readout_and_the_primarys_value_as_confidence(speaking):
    module, prompts, examples = speaking
    records = module.evaluator.answer(collate_prompts(list(zip(prompts, examples))), batch_idx=1)
    assert [sorted(r["readouts"]) for r in records] == [["expected", "greedy", "sampled"]] * len(records)
    assert all(r["readout"] == "sampled" and r["confidence"] == r["readouts"]["sampled"] for r in records)
    assert available_readouts(records) == ["greedy", "expected", "sampled"]
    assert [r["confidence"] for r in with_readout(records, "expected")] == [r["readouts"]["expected"] for r in records]
    with pytest.raises(KeyError, match="no 'expected' readout"):
        with_readout([{"id": "a", "readouts": {"greedy": 0.5}}], "expected")


@pytest.mark.parametrize("training", [True, False])
def test_expected_readout_runs_in_eval_mode_and_leaves_the_student_in_its_mode(speaking, training):
    module, prompts, _ = speaking
    module.student.train(training)
    texts = ["8\nConfidence: 0.9", "8"] * (len(prompts) // 2)
    values = expected_readouts(module.student, module.tokenizer, prompts, texts)
    assert module.student.training is training
    assert all(not m.training for m in module.teacher.modules())  # the teacher is never switched
    eval_copy = copy.deepcopy(module.student).eval()
    expected = [expected_confidence(eval_copy, module.tokenizer, p, t) for p, t in zip(prompts, texts)]
    assert values == [value if "Confidence" in text else 0.0 for value, text in zip(expected, texts)]  # unstated: 0
    module.student.eval()


def test_expected_readout_of_a_sharded_student_is_the_unsharded_ones(speaking):
    """FSDP2 over a 1-process gloo group: every rank evaluates every prompt (no distributed sampler) and scores each
    answer with the same two forwards, so the readout needs no special case."""
    module, prompts, _ = speaking
    texts = ["8\nConfidence: 0.9", "8"] * (len(prompts) // 2)
    plain = expected_readouts(module.student, module.tokenizer, prompts, texts)
    sharded = copy.deepcopy(module)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        shard_model(sharded.student, dist.device_mesh.init_device_mesh("cpu", (1,)))
        assert expected_readouts(sharded.student, sharded.tokenizer, prompts, texts) == pytest.approx(plain, abs=1e-6)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sharded_readouts_match(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2: the expected readout of the FSDP2-sharded student, on answers that differ between ranks,
    is the unsharded copy's (rank 0 saves whether it was so on every rank)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        module = CaOPDModule(ModelConfig(tiny=TINY))
        redraw(module.student, seed=1, scale=0.3)
        prompts = [prompt_ids(module.tokenizer, QUESTION)] * 3
        texts = [f"{rank}{i}\nConfidence: 0.9" for i in range(3)]  # this rank's own answers
        plain = copy.deepcopy(module.student).eval()
        expected = [expected_confidence(plain, module.tokenizer, p, t) for p, t in zip(prompts, texts)]
        shard_model(module.student, dist.device_mesh.init_device_mesh("cpu", (2,)))
        got = expected_readouts(module.student, module.tokenizer, prompts, texts)
        same = torch.tensor(int(all(abs(a - b) < 1e-6 for a, b in zip(got, expected))))
        dist.all_reduce(same, op=dist.ReduceOp.MIN)
        if rank == 0:
            torch.save({"same": bool(same.item()), "values": got}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_expected_readout_on_two_fsdp_ranks_with_different_answers(tmp_path):
    out = tmp_path / "sharded.pt"
    mp.spawn(sharded_readouts_match, args=(free_port(), str(out)), nprocs=2, join=True)
    result = torch.load(out)
    assert result["same"] and len(set(result["values"])) == 3


# ---- configuration ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"primary": "mode"}, r"model.readout: unknown readout 'mode'"),
        ({"report": ["greedy", "mean"]}, r"model.readout: unknown readout 'mean'"),
        ({"num_samples": 0}, r"model.readout.num_samples must be >= 1 .* got 0"),
        ({"temperature": 0.0}, r"model.readout.temperature > 0, got .* and 0.0"),
    ],
)
def test_bad_readout_settings_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReadoutConfig(**kwargs)


def test_readouts_lists_the_primary_first_each_once():
    assert ReadoutConfig().readouts == ("greedy", "expected")
    assert ReadoutConfig(primary="expected", report=["greedy", "expected", "sampled"]).readouts == (
        "expected",
        "greedy",
        "sampled",
    )
    assert ReadoutConfig(primary="sampled", report=[]).readouts == ("sampled",)


# ---- through the CLI -------------------------------------------------------------------------------------------------


def test_test_command_reports_every_readout_with_the_expected_one_primary(tmp_path):
    config = small_config(tmp_path, max_epochs=1)
    readout = ["--model.readout.primary=expected", "--model.readout.report=[greedy,expected,sampled]"]
    assert main(["test", "--config", str(config), "--model.readout.num_samples=2", *readout]) == 0

    (metrics_file,) = tmp_path.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["readout"] == "expected" and list(metrics["by_readout"]) == ["expected", "greedy", "sampled"]
    primary = {key: value for key, value in metrics.items() if key not in ("readout", "by_readout")}
    assert primary == metrics["by_readout"]["expected"] and primary["n"] == 8
    assert metrics["by_readout"]["greedy"]["accuracy"] == primary["accuracy"]  # one answer, several confidences
    assert (metrics_file.parent / "reliability_readouts.png").stat().st_size > 1000

    records = [json.loads(line) for line in (metrics_file.parent / "test_predictions.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(r["readout"] == "expected" for r in records)
    assert all(r["confidence"] == r["readouts"]["expected"] for r in records)
    # A stated confidence reads a value strictly inside (0, 1); an unstated one reads 0, under every readout.
    assert all(0.0 < r["confidence"] < 1.0 if r["parsed"] else r["confidence"] == 0.0 for r in records)
    assert [r["readouts"]["greedy"] for r in records] == [parse_confidence(r["completion"]).value for r in records]

    rows = csv.DictReader((metrics_file.parent / "metrics.csv").open())  # test logs beside its results
    logged = {key: float(value) for row in rows for key, value in row.items() if value}
    for name in ("expected", "greedy", "sampled"):
        assert logged[f"test/{name}/ece"] == pytest.approx(metrics["by_readout"][name]["ece"], abs=1e-6)
    assert logged["test/ece"] == pytest.approx(metrics["ece"], abs=1e-6)
