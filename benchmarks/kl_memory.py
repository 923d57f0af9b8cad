"""Peak memory and time of the chunked distillation loss against the naive full-logits loss, per weight dtype.

Shape (Qwen2.5-0.5B's read-out): vocabulary 151,936, hidden 896, 1,024 completion tokens; forward + backward,
``--divergence`` (default reverse KL), on CPU. ``--dtype`` sets the dtype of the weights and hidden states (several
may be given); whatever it is, both variants project to the vocabulary in float32 (the chunked loss by design, the
naive one by upcasting first, as a careful full-logits implementation does: a bf16 matmul at these shapes is ~200x
slower on a CPU without native bf16). Each variant runs in a fresh process; peak memory is the rise of the
process's peak resident set size
above what the inputs already hold (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``).

    python benchmarks/kl_memory.py [--tokens 1024] [--vocab 151936] [--hidden 896] [--chunk-size 64] [--repeats 3]
                                   [--dtype float32 bfloat16] [--divergence reverse] [--autograd]

Per dtype it prints the two ratios (targets: chunked peak <= 20% of naive, time <= 1.2x); with both dtypes, the
chunked loss's time with bf16 weights against float32 weights. ``--autograd`` also measures the chunked loss with the
gradient taken by autograd on each chunk, the path of a divergence defined without a closed form (the built-in's own
``per_token`` differentiated), and prints its ratios to the naive loss: its memory should stay chunked.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from peak_memory import reset_peak, rss_kib  # beside this script

DTYPES = ("float32", "bfloat16")
DIVERGENCES = ("reverse", "forward", "jsd")  # the built-ins of caopd_pl.losses.DIVERGENCES


def _by_autograd(divergence: str):
    """The built-in ``divergence`` with its closed form left out: chunked_divergence differentiates per_token."""
    from caopd_pl.losses import DIVERGENCES, Divergence

    builtin = DIVERGENCES.build(divergence)

    class ByAutograd(Divergence):  # no name: not registered, used as the object it is
        def per_token(self, log_p, log_q):
            return builtin.per_token(log_p, log_q)

    return ByAutograd()


def run_variant(
    variant: str,
    dtype_name: str,
    tokens: int,
    vocab: int,
    hidden: int,
    chunk_size: int,
    repeats: int,
    divergence: str = "reverse",
) -> dict:
    import torch

    from caopd_pl.losses import chunked_divergence, token_divergence

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    h = torch.randn(tokens, hidden).to(dtype).requires_grad_()
    w = (torch.randn(vocab, hidden) * 0.02).to(dtype).requires_grad_()
    th, tw = torch.randn(tokens, hidden).to(dtype), (torch.randn(vocab, hidden) * 0.02).to(dtype)
    w.grad = torch.zeros_like(w)  # the optimizer's gradient buffer exists in training either way
    kind = _by_autograd(divergence) if variant == "autograd" else divergence
    h.grad = torch.zeros_like(h)

    def step():
        if variant == "naive":  # (N, V) float32 logits, twice; .float() is free for float32 weights
            loss = token_divergence(h.float() @ w.float().T, th.float() @ tw.float().T, divergence).sum()
        else:
            loss = chunked_divergence(h, w, th, tw, kind, chunk_size=chunk_size)
        loss.backward()
        return loss.item()

    step()  # warm-up (allocator, threads)
    reset_peak()
    baseline = rss_kib("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - start)
    peak = (rss_kib("VmHWM") - baseline) / 1024
    return {"variant": variant, "dtype": dtype_name, "peak_mib": peak, "seconds": min(times), "loss": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=["float32"], help="weights and hidden states")
    parser.add_argument("--divergence", choices=DIVERGENCES, default="reverse")
    parser.add_argument("--autograd", action="store_true", help="also time the autograd-on-each-chunk fallback")
    parser.add_argument("--variant", choices=["naive", "chunked", "autograd"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = dict(
        tokens=args.tokens, vocab=args.vocab, hidden=args.hidden, chunk_size=args.chunk_size, divergence=args.divergence
    )
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.dtype[0], **shape, repeats=args.repeats)))
        return
    results = {}
    for dtype in args.dtype:
        for variant in ("naive", "chunked", "autograd") if args.autograd else ("naive", "chunked"):
            options = [f"--{key.replace('_', '-')}={value}" for key, value in shape.items()]
            command = [sys.executable, __file__, "--variant", variant, "--dtype", dtype, "--repeats", str(args.repeats)]
            out = subprocess.run(command + options, check=True, capture_output=True, text=True).stdout
            r = results[dtype, variant] = json.loads(out.strip().splitlines()[-1])
            print(
                f"{variant:8s} {dtype:9s} peak {r['peak_mib']:8.0f} MiB   time {r['seconds']:6.2f} s   "
                f"loss {r['loss']:.4f}"
            )
        memory = results[dtype, "chunked"]["peak_mib"] / results[dtype, "naive"]["peak_mib"]
        speed = results[dtype, "chunked"]["seconds"] / results[dtype, "naive"]["seconds"]
        print(f"{dtype} chunked/naive: peak memory {memory:.3f} (target <= 0.20), time {speed:.3f} (target <= 1.20)")
        if args.autograd:
            memory = results[dtype, "autograd"]["peak_mib"] / results[dtype, "naive"]["peak_mib"]
            speed = results[dtype, "autograd"]["seconds"] / results[dtype, "naive"]["seconds"]
            print(f"{dtype} autograd fallback/naive: peak memory {memory:.3f}, time {speed:.3f}")
    print("shape: " + " ".join(f"{key}={value}" for key, value in shape.items()))
    if all((dtype, "chunked") in results for dtype in DTYPES):
        ratio = results["bfloat16", "chunked"]["seconds"] / results["float32", "chunked"]["seconds"]
        print(f"chunked loss, bf16 weights / float32 weights: time {ratio:.2f}")


if __name__ == "__main__":
    main()
