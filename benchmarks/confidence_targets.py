"""What the teacher and the student of a run say about the confidence line: the gap CaOPD's loss has to close.

For a model directory (a warm start: ``runs/real_model/seed_<s>_<digest>/base``) and a few test prompts of the
config's task, with each prompt's golden answer written out, prints the teacher's distribution over the 101
candidate values ``0.00`` ... ``1.00`` when its privileged prompt (the ``demo`` template with the note) states a
P_acc, and the student's on the plain prompt: the expected value, the mode and its probability, and P(``1.00``)
(:func:`caopd_pl.readouts.candidate_log_probs`, exact).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/confidence_targets.py --model runs/real_model/seed_0_fa150119/base
"""

from __future__ import annotations

import argparse

import torch
import yaml

from caopd_pl.models.loading import ModelConfig, load_model
from caopd_pl.readouts import CANDIDATE_VALUES, candidate_log_probs
from caopd_pl.tasks.reasoning_gym import ReasoningGymTask
from caopd_pl.templates import prompt_ids, revised_completion_ids, teacher_messages


def distribution(model, prompt: list[int], candidates: list[list[int]]) -> str:
    probabilities = candidate_log_probs(model, prompt, candidates).softmax(0)
    expected = float((probabilities * torch.tensor(CANDIDATE_VALUES, dtype=torch.float64)).sum())
    mode = int(probabilities.argmax())
    return (
        f"E[value] {expected:.2f}, mode {CANDIDATE_VALUES[mode]:.2f} (p {probabilities[mode]:.3f}), "
        f"p(1.00) {probabilities[-1]:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model directory (a warm start)")
    parser.add_argument("--config", default="configs/real/smollm2_chain_sum.yaml")
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--notes", type=float, nargs="+", default=[0.25, 0.62])
    args = parser.parse_args()

    with open(args.config) as file:
        task_args = dict(yaml.safe_load(file)["data"]["task"]["init_args"])
    task_args |= {"num_train": 0, "num_val": 0, "num_test": args.prompts, "ood_config": None}
    task = ReasoningGymTask(**task_args)
    model, tokenizer = load_model(ModelConfig(name_or_path=args.model))
    model.eval()
    for example in task.split("test"):
        candidates = [revised_completion_ids(tokenizer, example.demonstration, v) for v in CANDIDATE_VALUES]
        print(example.reference["entry"]["question"])
        for note in args.notes:
            messages = teacher_messages(example.student_messages(), example.demonstration, note, "demo", note=True)
            print(f"  teacher, note {note:.2f}: {distribution(model, prompt_ids(tokenizer, messages), candidates)}")
        student = prompt_ids(tokenizer, example.student_messages())
        print(f"  student:            {distribution(model, student, candidates)}")
    task.verifier.close()


if __name__ == "__main__":
    main()
