"""Rollout throughput: the Hugging Face engine against the vLLM engine, same model, same sampling settings.

Two sizes: the embedded tiny default (character tokenizer, real prompts) and a random-weight Qwen2 of about 100M
parameters (vocabulary 32,000, random prompt ids). K samples per prompt at temperature 1; tokens/s counts the
completion tokens each engine returned. The vLLM weight sync is timed after an in-place change to every weight
(a real push, as after an epoch of training) and reported as a share of one rollout round.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 python benchmarks/rollout_throughput.py \
        [--sizes tiny 100m] [--prompts 64] [--samples 8] [--new-tokens 128] [--prompt-len 32] [--threads N]

Targets: vLLM >= 1.5x the Hugging Face engine at the 100M size on CPU; sync <= 5% of the rollout time.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.models.tokenizer import build_char_tokenizer
from caopd_pl.rollout.base import RolloutConfig, RolloutEngine

SIZES = {
    "tiny": dict(spec=TinyModelConfig(), vocab=None),
    "100m": dict(
        spec=TinyModelConfig(
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            num_kv_heads=12,
            intermediate_size=2048,
            max_positions=1024,
        ),
        vocab=32_000,
    ),
}


def build(size: str, num_prompts: int, prompt_len: int):
    """(model, tokenizer, prompts) of a size; the 100M model keeps the char tokenizer for decoding ids < 113."""
    tokenizer = build_char_tokenizer()
    vocab = SIZES[size]["vocab"] or len(tokenizer)
    model = build_tiny_model(SIZES[size]["spec"], vocab, tokenizer.pad_token_id, tokenizer.eos_token_id).eval()
    generator = torch.Generator().manual_seed(0)
    if SIZES[size]["vocab"] is None:
        texts = [f"What is {i} + {2 * i + 7}? Think, then answer." for i in range(num_prompts)]
        chats = [[{"role": "user", "content": text}] for text in texts]
        prompts = [
            tokenizer(tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True))["input_ids"]
            for c in chats
        ]
    else:
        prompts = torch.randint(4, vocab, (num_prompts, prompt_len), generator=generator).tolist()
    return model, tokenizer, [list(map(int, p)) for p in prompts]


def timed_generate(engine: RolloutEngine, prompts: list[list[int]]) -> tuple[float, int]:
    """Seconds for one call over ``prompts`` (chunked by the engine at ``rollout.batch_size``), completion tokens."""
    start = time.perf_counter()
    rollouts = engine.generate(prompts, seed=0)
    seconds = time.perf_counter() - start
    return seconds, sum(len(r.token_ids) for group in rollouts for r in group)


def bench_size(size: str, args: argparse.Namespace) -> dict:
    from caopd_pl.rollout.hf import HFEngine
    from caopd_pl.rollout.vllm import VLLMEngine

    model, tokenizer, prompts = build(size, args.prompts, args.prompt_len)
    config = RolloutConfig(num_samples=args.samples, temperature=1.0, max_new_tokens=args.new_tokens)
    params = sum(p.numel() for p in model.parameters())
    hf_seconds, hf_tokens = timed_generate(HFEngine(config, model, tokenizer), prompts)

    start = time.perf_counter()
    # vLLM schedules its own batches: one call over every prompt, as before engines chunked (HF: 256 sequences a call)
    engine = VLLMEngine(replace(config, batch_size=len(prompts) * args.samples), model, tokenizer)
    startup = time.perf_counter() - start
    timed_generate(engine, prompts[:2])  # warm-up
    vllm_seconds, vllm_tokens = timed_generate(engine, prompts)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0001)  # every weight changes, as after an epoch: the next sync is a full push
    start = time.perf_counter()
    engine.sync(model)
    sync = time.perf_counter() - start
    engine.close()
    hf_rate, vllm_rate = hf_tokens / hf_seconds, vllm_tokens / vllm_seconds
    return dict(
        size=size,
        params_m=round(params / 1e6, 1),
        sequences=len(prompts) * args.samples,
        hf_tokens_per_s=round(hf_rate, 1),
        vllm_tokens_per_s=round(vllm_rate, 1),
        speedup=round(vllm_rate / hf_rate, 2),
        hf_seconds=round(hf_seconds, 2),
        vllm_seconds=round(vllm_seconds, 2),
        vllm_startup_s=round(startup, 2),
        sync_s=round(sync, 3),
        sync_share=round(sync / vllm_seconds, 4),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["tiny", "100m"])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt length of the 100M model (random ids)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # before vLLM starts: its CPU worker then freezes the setting
    print(f"torch threads: {torch.get_num_threads()}")
    for size in args.sizes:
        result = bench_size(size, args)
        print(json.dumps(result))
        print(
            f"{size}: HF {result['hf_tokens_per_s']} tok/s, vLLM {result['vllm_tokens_per_s']} tok/s, "
            f"ratio {result['speedup']}x (target >= 1.5 at 100m); "
            f"sync {result['sync_s']} s = {100 * result['sync_share']:.2f}% of a rollout (target <= 5%)"
        )


if __name__ == "__main__":
    main()
