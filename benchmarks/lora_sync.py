"""LoRA rollouts through vLLM: merged weights (what the project does) against vLLM's own LoRA requests.

Both engines serve the same student: a random Qwen3 built in code with rank-r adapters on every linear layer of
its blocks. Each sync first moves the student's adapter (a small random step, as training would). Merged: the
project's ``VLLMEngine.sync`` pushes every weight with the adapter merged in. LoRA requests: the base is pushed once,
the adapter is written as a peft folder and reloaded in place (``LoRARequest(load_inplace=True)``, timed with the
one-token request that loads it). Both decode the same greedy prompts; the script prints the best of
``--repeats`` for each, and whether the two engines' completions agree token for token.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lora_sync.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engines


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """The shortest wall time of ``repeats`` calls of ``run``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64, help="greedy tokens decoded per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from peft import LoraConfig
    from safetensors.torch import save_file
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from caopd_pl.models.loading import ModelConfig
    from caopd_pl.models.lora import LoraSettings
    from caopd_pl.models.tiny import TinyModelConfig
    from caopd_pl.module import CaOPDModule
    from caopd_pl.rollout.base import RolloutConfig
    from caopd_pl.rollout.vllm import VLLMEngine, _save_model_files

    torch.manual_seed(0)
    spec = TinyModelConfig(
        architecture="qwen3",
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.hidden // 64,
        num_kv_heads=max(1, args.hidden // 128),
        intermediate_size=3 * args.hidden,
    )
    module = CaOPDModule(model=ModelConfig(tiny=spec), lora=LoraSettings(rank=args.rank, alpha=2.0 * args.rank))
    student, tokenizer = module.student, module.tokenizer
    base_count = sum(p.numel() for name, p in student.named_parameters() if "lora_" not in name)
    greedy = RolloutConfig(engine="vllm", num_samples=1, temperature=0.0, max_new_tokens=args.tokens)
    prompts = [tokenizer(f"What is {i}*{i + 3}?")["input_ids"] for i in range(args.prompts)]

    def train_step() -> None:  # what an optimizer step does to the adapter, for the sync to see
        with torch.no_grad():
            for name, param in student.named_parameters():
                if ".student." in name:
                    param.add_(torch.randn_like(param) * 0.01)

    # LoRA requests first: the plain base pushed once, the adapter as a peft folder reloaded in place at each sync.
    model_dir, adapter_dir = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    _save_model_files(student, tokenizer, [tokenizer.eos_token_id], str(model_dir))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    adapter_config = LoraConfig(r=args.rank, lora_alpha=2.0 * args.rank, target_modules=targets)

    def save_adapter() -> None:
        tensors = {
            "base_model.model." + name.replace(".student.", "."): param.detach().contiguous().clone()
            for name, param in student.named_parameters()
            if ".student." in name and "lora_" in name
        }
        save_file(tensors, str(adapter_dir / "adapter_model.safetensors"))
        adapter_config.save_pretrained(str(adapter_dir))

    save_adapter()
    llm = LLM(
        model=str(model_dir),
        tokenizer=str(model_dir),
        load_format="dummy",
        dtype="float32",
        enforce_eager=True,
        enable_chunked_prefill=False,
        enable_lora=True,
        max_lora_rank=args.rank,
        max_loras=1,
        generation_config="vllm",
        kv_cache_memory_bytes=1 << 28,
    )
    base = [
        (name.replace(".base_layer", ""), param.detach())
        for name, param in student.named_parameters(remove_duplicate=False)
        if "lora_" not in name
    ]
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(base)})
    requests = [{"prompt_token_ids": prompt} for prompt in prompts]
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0, stop_token_ids=[tokenizer.eos_token_id])
    adapter = LoRARequest("student", 1, str(adapter_dir))

    def lora_sync() -> None:
        train_step()
        save_adapter()
        reload = LoRARequest("student", 1, str(adapter_dir), load_inplace=True)
        llm.generate(requests[:1], SamplingParams(max_tokens=1), lora_request=reload, use_tqdm=False)

    def lora_decode() -> list:
        return llm.generate(requests, params, lora_request=adapter, use_tqdm=False)

    requested = {"sync_s": best_seconds(lora_sync, args.repeats), "decode_s": best_seconds(lora_decode, args.repeats)}
    lora_tokens = [list(output.outputs[0].token_ids) for output in lora_decode()]

    # Merged weights, the project's path; its first completions come from the adapter the LoRA engine decoded with.
    engine = VLLMEngine(greedy, student, tokenizer)
    merged_tokens = [group[0].token_ids for group in engine.generate(prompts, seed=0, sampling=greedy)]
    merged = {
        "sync_s": best_seconds(lambda: (train_step(), engine.sync(student)), args.repeats),
        "decode_s": best_seconds(lambda: engine.generate(prompts, seed=0, sampling=greedy), args.repeats),
    }
    engine.close()

    print(f"base parameters {base_count / 1e6:.1f}M, rank {args.rank}, {args.prompts} prompts x {args.tokens} tokens")
    print(json.dumps({"merged": merged, "lora_requests": requested}, indent=2))
    print(f"decode, LoRA requests / merged: {requested['decode_s'] / merged['decode_s']:.2f}")
    print(f"same greedy completions: {lora_tokens == merged_tokens}")


if __name__ == "__main__":
    main()
