"""Peak memory and time of the chunked distillation loss against the naive full-logits loss.

Shape (Qwen2.5-0.5B's read-out): vocabulary 151,936, hidden 896, 1,024 completion tokens; forward + backward,
reverse KL, float32 on CPU. Each variant runs in a fresh process; peak memory is the rise of the process's peak
resident set size above what the inputs already hold (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``).

    python benchmarks/kl_memory.py [--tokens 1024] [--vocab 151936] [--hidden 896] [--chunk-size 64] [--repeats 3]

The last line prints the two ratios; targets: chunked peak <= 20% of naive, time <= 1.2x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_variant(variant: str, tokens: int, vocab: int, hidden: int, chunk_size: int, repeats: int) -> dict:
    import torch

    from caopd_pl.losses import chunked_divergence, token_divergence

    torch.manual_seed(0)
    h = torch.randn(tokens, hidden, requires_grad=True)
    w = (torch.randn(vocab, hidden) * 0.02).requires_grad_()
    th, tw = torch.randn(tokens, hidden), torch.randn(vocab, hidden) * 0.02
    w.grad = torch.zeros_like(w)  # the optimizer's gradient buffer exists in training either way
    h.grad = torch.zeros_like(h)

    def step():
        if variant == "naive":
            loss = token_divergence(h @ w.T, th @ tw.T, "reverse").sum()  # (N, V) logits, twice
        else:
            loss = chunked_divergence(h, w, th, tw, "reverse", chunk_size=chunk_size)
        loss.backward()
        return loss.item()

    step()  # warm-up (allocator, threads)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak RSS to the current RSS
    baseline = _rss_kib("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - start)
    return {"variant": variant, "peak_mib": (_rss_kib("VmHWM") - baseline) / 1024, "seconds": min(times), "loss": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        result = run_variant(args.variant, args.tokens, args.vocab, args.hidden, args.chunk_size, args.repeats)
        print(json.dumps(result))
        return
    results = {}
    for variant in ("naive", "chunked"):
        command = [sys.executable, __file__, "--variant", variant] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "variant"
        ]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        r = results[variant]
        print(f"{variant:8s} peak {r['peak_mib']:8.0f} MiB   time {r['seconds']:6.2f} s   loss {r['loss']:.4f}")
    memory = results["chunked"]["peak_mib"] / results["naive"]["peak_mib"]
    speed = results["chunked"]["seconds"] / results["naive"]["seconds"]
    print(f"shape: tokens={args.tokens} vocab={args.vocab} hidden={args.hidden} chunk={args.chunk_size}")
    print(f"chunked/naive: peak memory {memory:.3f} (target <= 0.20), time {speed:.3f} (target <= 1.20)")


if __name__ == "__main__":
    main()
