"""What a rollout engine samples from when a LoRA student has a bf16 base: the student, or a rounded copy of it?

The student trains fp32 adapters over a frozen bf16 base; the engine gets the adapter merged into the base weights
(``W + (alpha / r) B @ A``). Rounded to bf16, most of an early adapter's change to W rounds away (issue 21, item 3).
This script trains the adapters of a real model for a few optimizer steps (supervised, on reasoning-gym
demonstrations: the size of step training makes) and, after each mark, compares on held-out teacher-forced
completions the next-token distributions of the exact student (base + adapter computed in fp32) with

  * ``student_bf16``: base + adapter as bf16 training computes it (the compute-precision floor);
  * ``merged bf16``: the adapter merged into the base and rounded to bf16 (what a bf16 engine holds);
  * ``merged fp32``: the adapter merged in fp32 (what ``caopd_pl.models.lora.iter_merged_parameters`` sends, and
    what an fp32 engine holds, as vLLM on CPU runs);
  * ``base``: the adapter off (how far training has moved the policy at all).

It prints KL(student || x) per token and greedy (argmax) agreement with the student, for each x, the share of the
adapter's effect that survives (1 - KL(student || merged) / KL(student || base)), and the share of adapted weight
elements the bf16 merge leaves unchanged.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lora_bf16_gap.py --model models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/smollm2-135m-instruct", help="a local model folder")
    parser.add_argument("--task", default="chain_sum", help="reasoning-gym dataset of the demonstrations")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--marks", type=int, nargs="+", default=[1, 4, 16], help="optimizer steps at which to measure")
    parser.add_argument("--held-out", type=int, default=32, help="held-out completions compared")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args()

    from caopd_pl.models.loading import ModelConfig, load_model
    from caopd_pl.models.lora import LoraSettings, add_adapters, iter_merged_parameters, lora_layers
    from caopd_pl.tasks.reasoning_gym import ReasoningGymTask
    from caopd_pl.templates import prompt_ids

    torch.manual_seed(0)
    model, tokenizer = load_model(ModelConfig(name_or_path=args.model, dtype="bfloat16"))
    base_model = copy.deepcopy(model).eval()
    add_adapters(model, LoraSettings(rank=args.rank, alpha=2.0 * args.rank))
    model.train()
    task = ReasoningGymTask(dataset=args.task, num_train=args.batch * max(args.marks), num_val=args.held_out)

    def sequences(split: str) -> list[tuple[list[int], list[int]]]:
        rows = []
        for example in task.split(split):
            prompt = prompt_ids(tokenizer, example.student_messages())
            completion = tokenizer(example.demonstration + "\nConfidence: 1.00", add_special_tokens=False)["input_ids"]
            rows.append((prompt, completion + [tokenizer.eos_token_id]))
        return rows

    def batch_of(rows):
        length = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), length), tokenizer.pad_token_id or 0)
        labels = torch.full((len(rows), length), -100)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
            attention[i, : len(p) + len(c)] = 1
        return ids, attention, labels

    train, held_out = sequences("train"), batch_of(sequences("val"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)

    @torch.no_grad()
    def log_probs(net) -> torch.Tensor:  # (counted tokens, V) float32
        ids, attention, labels = held_out
        logits = net(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        return F.log_softmax(logits[labels[:, 1:] != -100], dim=-1)

    def merged(dtype: torch.dtype) -> torch.nn.Module:
        copy_ = copy.deepcopy(base_model).to(dtype)
        named = ((n, p.detach().float() if dtype == torch.float32 else p.detach()) for n, p in model.named_parameters())
        state = dict(iter_merged_parameters(named, model))
        copy_.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
        return copy_.eval()

    def compare(step: int) -> dict:
        model.eval()
        student = log_probs(copy.deepcopy(model).float())  # the exact policy
        row = {"step": step, "student_bf16": None}
        candidates = [
            ("student_bf16", model),
            ("base", base_model),
            ("merged_bf16", merged(torch.bfloat16)),
            ("merged_fp32", merged(torch.float32)),
        ]
        for name, net in candidates:
            other = log_probs(net)
            kl = (student.exp() * (student - other)).sum(-1).mean().item()
            agree = (student.argmax(-1) == other.argmax(-1)).float().mean().item()
            row[name] = {"kl": kl, "greedy_agreement": agree}
        model.train()
        for name in ("merged_bf16", "merged_fp32"):
            row[name]["effect_kept"] = 1 - row[name]["kl"] / row["base"]["kl"] if row["base"]["kl"] > 0 else None
        unchanged, total = 0, 0
        for layer in lora_layers(model):
            weight = layer.base_layer.weight
            delta = layer.get_delta_weight("student")
            unchanged += int(((weight.float() + delta).to(torch.bfloat16) == weight).sum())
            total += weight.numel()
        row["bf16_elements_unchanged"] = unchanged / total
        return row

    rows = []
    for step in range(1, max(args.marks) + 1):
        ids, attention, labels = batch_of(train[(step - 1) * args.batch : step * args.batch])
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step in args.marks:
            rows.append(compare(step))
            row = rows[-1]
            cells = "   ".join(
                f"{name} {row[name]['kl']:.2e} / {row[name]['greedy_agreement']:.3f}"
                for name in ("student_bf16", "base", "merged_bf16", "merged_fp32")
            )
            print(
                f"step {step:3d}  KL(student || x) / greedy agreement: {cells}   effect kept: bf16 merge "
                f"{row['merged_bf16']['effect_kept']:.2f}, fp32 merge {row['merged_fp32']['effect_kept']:.2f}   "
                f"adapted elements a bf16 merge leaves unchanged {row['bf16_elements_unchanged']:.2f}",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
