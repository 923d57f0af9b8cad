"""How long a warm start a real instruct model needs to learn the answer format, and which demonstrations teach it.

Warm-starts SmolLM2-135M-Instruct on a reasoning-gym task (``configs/real/smollm2_chain_sum.yaml``'s by default)
exactly as ``fit`` does (:func:`caopd_pl.warmstart.warm_start_student`), and at the given steps answers the test
and ood prompts greedily with Hugging Face ``generate``, judged by the task's verifier: accuracy, format adherence
(a parsed ``Confidence:``) and mean stated confidence on the test split, and three example completions per split.
``--bare`` uses demonstrations that hold the answer line alone (``solutions: false``), instead of the worked solution
or the arithmetic written out before it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/warm_start_format.py --steps 32 --marks 16 32
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/warm_start_format.py --steps 24 --marks 12 24 --bare
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml

from caopd_pl.confidence import parse_confidence
from caopd_pl.models.loading import ModelConfig, load_model
from caopd_pl.tasks.reasoning_gym import ReasoningGymTask
from caopd_pl.templates import prompt_ids
from caopd_pl.warmstart import WarmStartConfig, warm_start_student


def probe(model, tokenizer, task: ReasoningGymTask, max_new_tokens: int) -> dict[str, float]:
    """Greedy answers on the test and ood splits: the test split's accuracy, format adherence and mean confidence."""
    model.eval()
    results = {}
    for split in ("test", "ood"):
        examples = task.split(split)
        correct, parsed, stated = [], [], []
        for index, example in enumerate(examples):
            ids = prompt_ids(tokenizer, example.student_messages())
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
            text = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
            verdict = task.verifier.verify(text, example.reference)
            confidence = parse_confidence(text)
            correct.append(float(verdict.correct))
            parsed.append(float(confidence.parsed))
            stated.append(confidence.value)
            if index < 3:
                print(f"    {split}: {text!r} (answer {example.reference['entry']['answer']}, {verdict.status})")
        results[split] = {
            "accuracy": statistics.fmean(correct),
            "format": statistics.fmean(parsed),
            "confidence": statistics.fmean(stated),
        }
    model.train()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/real/smollm2_chain_sum.yaml")
    parser.add_argument("--model", default=None, help="model directory (default: the config's)")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--marks", type=int, nargs="+", default=[16, 32], help="steps after which to probe")
    parser.add_argument("--lr", type=float, default=None, help="default: the config's warm_start.lr")
    parser.add_argument("--bare", action="store_true", help="demonstrations without worked solutions")
    parser.add_argument("--prompts", type=int, default=32, help="test prompts probed (ood: half as many)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="probe completions' length")
    args = parser.parse_args()

    with open(args.config) as file:
        config = yaml.safe_load(file)
    warm = config["model"]["warm_start"]
    task_args = dict(config["data"]["task"]["init_args"])
    task_args |= {"num_val": 4, "num_test": args.prompts, "num_ood": args.prompts // 2, "solutions": not args.bare}
    task = ReasoningGymTask(**task_args)
    model, tokenizer = load_model(ModelConfig(name_or_path=args.model or config["model"]["model"]["name_or_path"]))
    settings = WarmStartConfig(
        steps=args.steps,
        batch_size=warm["batch_size"],
        lr=args.lr or warm["lr"],
        privileged_fraction=warm["privileged_fraction"],
        seed=args.seed,
    )
    started, marks = time.perf_counter(), set(args.marks)
    length = args.max_new_tokens

    def on_step(step: int, loss: float) -> None:
        if step + 1 not in marks:
            return
        print(f"[{time.perf_counter() - started:.0f} s] step {step + 1}, loss {loss:.3f}", flush=True)
        result = probe(model, tokenizer, task, length)
        for split, cell in result.items():
            print(
                f"step {step + 1} {split}: accuracy {cell['accuracy']:.2f}, format {cell['format']:.2f}, "
                f"mean stated confidence {cell['confidence']:.2f}",
                flush=True,
            )

    warm_start_student(model, tokenizer, task.split("train"), settings, seed=args.seed, show_progress=False,
                       on_step=on_step)  # fmt: skip
    task.verifier.close()


if __name__ == "__main__":
    main()
