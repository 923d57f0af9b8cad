"""Peak memory per rank of one CaOPD training step: full fine-tuning, LoRA, and FSDP2 on 2 ranks; and Qwen3-8B's bill.

One step is what ``CaOPDModule`` does per batch: the student's and the EMA teacher's forward, the chunked loss
(:meth:`~caopd_pl.module.CaOPDModule.distillation_loss`), the backward, one AdamW step (its moments created on the
first step, as in training) and the EMA update. The model is a random-weight Qwen3 built in code (fp32, untied output
embedding as in Qwen3-8B; ~300M parameters by default, big enough that the weights, not the interpreter, dominate),
on CPU; FSDP2 runs as 2 processes (gloo) through :mod:`caopd_pl.sharding`, each rank stepping on its half of the
batch. Each mode runs in fresh processes (``MALLOC_MMAP_THRESHOLD_`` fixed, so freed tensors leave the process).

Peak memory is Linux's ``VmHWM`` over the step, reset through ``/proc/self/clear_refs`` once the models are built
(and sharded), so it counts the resident models, the gradients, the optimizer states and the step's transients. The
ratios compare it *net* of the interpreter's baseline (the resident size before any model exists, the same in every
mode: torch, transformers and Lightning imported), since that is not what the modes scale.

    python benchmarks/memory_scaling.py [--layers 24] [--hidden 1024] [--intermediate 3072] [--tokens 256]

It prints a table per mode, then what Qwen3-8B needs per GPU in each mode (bytes per parameter x parameters, the
formula shown; activations and the vLLM engine not included), then the two ratios last: LoRA / full fine-tuning
(target <= 0.5) and FSDP per rank / single process (target <= 0.65). Exits 1 when either target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from peak_memory import reset_peak, rss_kib  # beside this script

MODES = ("full", "lora", "fsdp")
LORA_TARGET, FSDP_TARGET = 0.5, 0.65
H200_GB = 141.0


# ---- one rank's step (run in a fresh process) --------------------------------------------------------------------


def _module(args: argparse.Namespace, lora: bool):
    from caopd_pl.losses import LossConfig
    from caopd_pl.models.loading import ModelConfig
    from caopd_pl.models.lora import LoraSettings
    from caopd_pl.models.tiny import TinyModelConfig
    from caopd_pl.module import CaOPDModule

    spec = TinyModelConfig(
        architecture="qwen3",
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.hidden // 64,
        num_kv_heads=args.hidden // 128,
        intermediate_size=args.intermediate,
        tie_word_embeddings=False,
    )
    settings = LoraSettings(rank=16, alpha=32.0) if lora else None
    return CaOPDModule(ModelConfig(tiny=spec), LossConfig(), ema_rate=0.01, lora=settings)


def _batch(vocab: int, rows: int, tokens: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    student_ids = torch.randint(3, vocab, (rows, tokens), generator=generator)  # (B, T)
    teacher_ids = torch.cat([torch.randint(3, vocab, (rows, 32), generator=generator), student_ids], 1)  # (B, 32 + T)
    student_mask = torch.zeros_like(student_ids, dtype=torch.bool)
    teacher_mask = torch.zeros_like(teacher_ids, dtype=torch.bool)
    student_mask[:, tokens // 2 : -1] = teacher_mask[:, 32 + tokens // 2 : -1] = True  # the completion's positions
    return {
        "student_ids": student_ids,
        "student_attention": torch.ones_like(student_ids),
        "student_mask": student_mask,
        "teacher_ids": teacher_ids,
        "teacher_attention": torch.ones_like(teacher_ids),
        "teacher_mask": teacher_mask,
    }


def _worker(rank: int, world: int, mode: str, args: argparse.Namespace, port: int, out: str) -> None:
    """Build, (shard,) reset the peak, step once; write this rank's figures to ``out``.rank."""
    import torch
    import torch.distributed as dist

    from caopd_pl.ema import ema_update
    from caopd_pl.module import CaOPDModule  # noqa: F401  (imported before the baseline is read)
    from caopd_pl.sharding import shard_model

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    baseline = rss_kib("VmRSS")
    module = _module(args, lora=mode == "lora")
    if world > 1:
        mesh = dist.device_mesh.init_device_mesh("cpu", (world,))
        shard_model(module.student, mesh)
        shard_model(module.teacher, mesh)
    trainable = [p for p in module.student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    batch = _batch(module.student.config.vocab_size, 2 * world, args.tokens)
    local = {key: value[2 * rank : 2 * rank + 2] for key, value in batch.items()}  # this rank's 2 rows
    module.train()
    reset_peak()
    resident = rss_kib("VmRSS")
    loss, _ = module.distillation_loss(local)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ema_update(module.teacher, module.student, module.ema_rate)
    figures = {
        "baseline_mib": baseline / 1024,
        "resident_mib": resident / 1024,
        "peak_mib": rss_kib("VmHWM") / 1024,
        "parameters": sum(p.numel() for p in module.student.parameters()),  # a DTensor counts its full shape
        "trainable": sum(p.numel() for p in trainable),
        "loss": loss.item(),
    }
    Path(f"{out}.{rank}").write_text(json.dumps(figures))
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_mode(mode: str, args: argparse.Namespace) -> list[dict]:
    """Run ``mode`` in fresh processes; one dict of figures per rank."""
    world = 2 if mode == "fsdp" else 1
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "figures")
        command = [sys.executable, __file__, "--worker", mode, "--out", out, *_shape_args(args)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
        return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)]


def _shape_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--layers={args.layers}",
        f"--hidden={args.hidden}",
        f"--intermediate={args.intermediate}",
        f"--tokens={args.tokens}",
    ]


def _spawn(mode: str, args: argparse.Namespace) -> None:
    """The worker process: one rank, or 2 ranks spawned for FSDP."""
    if mode == "fsdp":
        import torch.multiprocessing as mp

        mp.spawn(_worker, args=(2, mode, args, _free_port(), args.out), nprocs=2, join=True)
    else:
        _worker(0, 1, mode, args, 0, args.out)


# ---- Qwen3-8B per GPU ------------------------------------------------------------------------------------------


def qwen3_8b_counts(rank: int = 16) -> tuple[int, int]:
    """Qwen3-8B's parameter count (built on the meta device: no memory) and its LoRA adapters' (rank ``rank``,
    every linear layer but the output layer: r x (in + out) each)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=151_936,
        hidden_size=4096,
        intermediate_size=12_288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    adapters = sum(rank * (m.in_features + m.out_features) for m in linears)
    return params, adapters


def qwen3_8b_table() -> list[str]:
    """What Qwen3-8B needs per GPU in each mode, from bytes per parameter (weights, gradients, AdamW, teacher)."""
    params, adapters = qwen3_8b_counts()
    gb = 1e9
    rows = [
        # (mode, formula, bytes on 1 GPU, bytes per GPU on 8)
        ("full FT, bf16-mixed, fp32 teacher", "P x (4 w + 4 g + 8 adam + 4 teacher) = 20 P", 20 * params, 20 * params),
        ("full FT, bf16-mixed, bf16 teacher", "P x (4 + 4 + 8 + 2) = 18 P", 18 * params, 18 * params),
        (
            "full FT, bf16 weights (reference)",
            "P x (2 w + 2 g + 4 adam bf16 + 2 teacher) = 10 P",
            10 * params,
            10 * params,
        ),
        ("FSDP2, bf16-mixed, fp32 teacher", "20 P / N", 20 * params, 20 * params / 8),
        ("FSDP2, bf16-mixed, bf16 teacher", "18 P / N", 18 * params, 18 * params / 8),
        (
            "LoRA r=16, bf16 base, fp32 adapters",
            "2 P base (shared by the teacher) + A x (4 + 4 + 8 + 4 teacher)",
            2 * params + 20 * adapters,
            2 * params + 20 * adapters,  # data parallel: every GPU holds the base
        ),
    ]
    lines = [
        f"Qwen3-8B: P = {params / 1e9:.3f}B parameters (untied lm_head), LoRA r=16 all-linear: "
        f"A = {adapters / 1e6:.1f}M adapter parameters; N = GPUs. Per GPU, before activations and the vLLM engine "
        f"(30% of the GPU in the reference); an H200 holds {H200_GB:.0f} GB (* = over it)",
        f"{'mode':38s} {'formula':62s} {'1 GPU':>9s} {'8 GPUs':>9s}",
    ]
    for mode, formula, one, eight in rows:
        cells = [f"{size / gb:7.1f}{'*' if size / gb > H200_GB else ' '}GB" for size in (one, eight)]
        lines.append(f"{mode:38s} {formula:62s} {cells[0]:>9s} {cells[1]:>9s}")
    return lines


# ---- report ----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--tokens", type=int, default=256, help="sequence length of each of the 2 rows per rank")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _spawn(args.worker, args)
        return 0

    results = {mode: run_mode(mode, args) for mode in MODES}
    print(
        f"{'mode':6s} {'rank':>4s} {'params':>9s} {'trainable':>10s} {'baseline':>9s} {'resident':>9s} "
        f"{'peak':>9s} {'net peak':>9s}  (MiB; net = peak - baseline)"
    )
    net = {}
    for mode, ranks in results.items():
        for rank, fig in enumerate(ranks):
            print(
                f"{mode:6s} {rank:4d} {fig['parameters'] / 1e6:8.1f}M {fig['trainable'] / 1e6:9.2f}M "
                f"{fig['baseline_mib']:9.0f} {fig['resident_mib']:9.0f} {fig['peak_mib']:9.0f} "
                f"{fig['peak_mib'] - fig['baseline_mib']:9.0f}"
            )
        net[mode] = max(fig["peak_mib"] - fig["baseline_mib"] for fig in ranks)
    print()
    print("\n".join(qwen3_8b_table()))
    print()
    lora, fsdp = net["lora"] / net["full"], net["fsdp"] / net["full"]
    print(f"LoRA / full fine-tuning peak: {lora:.3f} (target <= {LORA_TARGET})")
    print(f"FSDP per-rank / single-process peak: {fsdp:.3f} (target <= {FSDP_TARGET})")
    return 0 if lora <= LORA_TARGET and fsdp <= FSDP_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
