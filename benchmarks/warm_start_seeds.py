"""Where the embedded default's warm start lands, seed by seed: the base model the quickstart distils from.

For each seed, builds the quickstart's model (``model.model.tiny.seed`` and ``model.warm_start.seed`` set to it),
warm-starts it exactly as ``fit`` does (:func:`caopd_pl.warmstart.warm_start_student`), then answers the test
prompts greedily with Hugging Face ``generate`` (40 new tokens, the ``exact`` verifier): accuracy overall and per
level, and the mean stated confidence (an answer without a confidence reads 0). One JSON line per seed; with
``--out`` the lines also go to a file, and a summary (mean, min, max, spread) ends the output. Issue 23's target:
accuracy in [0.35, 0.75] on every seed 0-7, spread <= 0.20, stated confidence >= 0.95, at one and two threads.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/warm_start_seeds.py --seeds 0 1 2 3 4 5 6 7 --threads 1
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/warm_start_seeds.py --seeds 0 1 2 3 --threads 2

``--set steps=1000`` (any ``WarmStartConfig`` field) and ``--task demonstration=short`` (any ``ArithmeticTask``
argument) change the setting measured. Seeds are independent, so several invocations may run side by side.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from caopd_pl import pipeline
from caopd_pl.confidence import parse_confidence
from caopd_pl.tasks.base import TaskExample
from caopd_pl.templates import prompt_ids
from caopd_pl.warmstart import warm_start_student


@torch.no_grad()
def probe(model, tokenizer, examples: list[TaskExample], verifier, max_new_tokens: int = 40) -> dict:
    """Greedy answers to ``examples``: accuracy, mean stated confidence, accuracy per level."""
    model.eval()
    by_level: dict[str, list[bool]] = collections.defaultdict(list)
    stated: list[float] = []
    for start in range(0, len(examples), 50):
        chunk = examples[start : start + 50]
        prompts = [prompt_ids(tokenizer, example.student_messages()) for example in chunk]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id)  # (B, T), left-padded
        attention = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention[row, width - len(prompt) :] = 1
        out = model.generate(input_ids=ids, attention_mask=attention, max_new_tokens=max_new_tokens, do_sample=False)
        for example, completion in zip(chunk, out[:, width:]):
            text = tokenizer.decode(completion, skip_special_tokens=True)
            by_level[example.meta["level"]].append(verifier.verify(text, example.reference).correct)
            stated.append(parse_confidence(text).value or 0.0)
    model.train()
    answers = [ok for oks in by_level.values() for ok in oks]
    return {
        "accuracy": round(sum(answers) / len(answers), 3),
        "confidence": round(sum(stated) / len(stated), 3),
        "levels": {level: round(sum(oks) / len(oks), 3) for level, oks in sorted(by_level.items())},
    }


def measure(seed: int, config: str, warm_start: dict, task: dict, split: str, limit: int | None, threads: int) -> dict:
    """Warm-start seed ``seed`` on ``threads`` torch threads and probe it on ``split`` (its first ``limit`` prompts;
    all when None)."""
    overrides = {"model": {"warm_start": {"seed": seed}, "model": {"tiny": {"seed": seed}}}}
    if task:
        overrides["data"] = {"task": {"init_args": task}}
    with tempfile.TemporaryDirectory() as root:
        experiment = pipeline.build(config, Path(root), [overrides])
    torch.set_num_threads(threads)  # after build: the config's num_threads (1 in the quickstart's) was applied there
    module = experiment.module
    settings = dataclasses.replace(module.warm_start, **warm_start)
    task_ = experiment.datamodule.task
    started = time.perf_counter()
    warm_start_student(module.student, module.tokenizer, task_.split("train"), settings, seed=seed, show_progress=False)
    seconds = time.perf_counter() - started
    result = probe(module.student, module.tokenizer, task_.split(split)[:limit], task_.verifier)
    return {"seed": seed, "threads": torch.get_num_threads(), "steps": settings.steps, **result, "seconds": seconds}


def assignments(pairs: list[str], name: str) -> dict:
    """``["steps=600"]`` -> ``{"steps": 600}`` (values read as YAML)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"{name}: {pair!r} must look like key=value")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6, 7])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (set OMP_NUM_THREADS to match)")
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--split", default="test")
    parser.add_argument("--set", nargs="*", default=[], help="warm-start fields, e.g. steps=1000")
    parser.add_argument("--task", nargs="*", default=[], help="task arguments, e.g. demonstration=short")
    parser.add_argument("--limit", type=int, help="probe only the split's first LIMIT prompts")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        warm_start, task = assignments(args.set, "--set"), assignments(args.task, "--task")
        result = measure(seed, args.config, warm_start, task, args.split, args.limit, args.threads)
        results.append(result)
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as file:
                file.write(line + "\n")
    accuracy = [r["accuracy"] for r in results]
    print(
        f"accuracy mean {statistics.mean(accuracy):.3f}, min {min(accuracy):.3f}, max {max(accuracy):.3f}, "
        f"spread {max(accuracy) - min(accuracy):.3f}; stated confidence min {min(r['confidence'] for r in results):.3f}"
    )


if __name__ == "__main__":
    main()
