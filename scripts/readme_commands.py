"""The README's commands, and what ``scripts/readme_check.sh`` does with each: run it as written, or not, and why.

One source of truth for "the README's commands": the lines of README.md's ``bash`` blocks and the ``$ `` lines of
its plain blocks, in order (``&&`` splits a line into commands, ``# ...`` comments are dropped). Every command is
either in :data:`RUN` (``readme_check.sh`` runs it from the repository root, in README order, as a newcomer would
after a fresh clone) or in :data:`DECLARED` (not run here, with the one-line reason). ``tests/test_readme.py`` reads
the same list: it checks that each command's files exist and its arguments parse, and fails when a command is in
neither group (so no command can be added unchecked) or when a group names a command the README no longer has.

Standard library only: ``readme_check.sh`` runs it with the system ``python3``, before ``.venv`` exists.

    python3 scripts/readme_commands.py    # the plan: one line per command, KIND <tab> command <tab> note
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

RUN = (
    "bash scripts/install.sh",
    ".venv/bin/python -m caopd_pl fit --config configs/quickstart.yaml",
    ".venv/bin/python -m pytest -q",
    ".venv/bin/python -m caopd_pl pull smollm2-135m-instruct",
    ".venv/bin/python -m caopd_pl test --config configs/quickstart.yaml "
    "--ckpt_path runs/quickstart/checkpoints/last.ckpt",
    ".venv/bin/python -m caopd_pl verifiers",
    ".venv/bin/python -m caopd_pl predict --config configs/quickstart.yaml "
    "--ckpt_path runs/quickstart/checkpoints/last.ckpt",
    ".venv/bin/python -m caopd_pl verify --verifier exact --input runs/quickstart/predict/last/predictions.jsonl "
    "--output runs/quickstart/judged.jsonl",
    ".venv/bin/python -m caopd_pl report --input runs/quickstart/judged.jsonl --out runs/quickstart/report",
    ".venv/bin/ruff check .",
    ".venv/bin/ruff format --check .",
    'OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -m "not slow"',
)
"""Commands run as written, in README order (a command the README repeats runs once)."""

_PAPER = "needs the Qwen3-8B checkpoint at /models/Qwen3-8B and the paper's splits under data/caopd (a GPU machine)"
_MISCAL = "the benchmark above on 3 seeds, not timed at these settings (one seed at K = 8: 15 min 24 s)"
_KL = "a timing benchmark at vocabulary 151,936 (the README's figures: {}); tests/test_losses.py checks the values"
_NODES = "needs GPUs: 8 on one node, or two such nodes (this machine has one node and no GPU)"
_REAL = "SmolLM2-135M-Instruct on this CPU: {}; tests/test_real_model.py runs fit and test on it, shrunk to seconds"
DECLARED = {
    ".venv/bin/python -m caopd_pl fit --config configs/real/smollm2_chain_sum.yaml": _REAL.format(
        "a 32-step warm start (5-7.5 min) and 5 epochs (10-15 min in the benchmark), not timed as one command"
    ),
    ".venv/bin/python -m caopd_pl test --config configs/real/smollm2_chain_sum.yaml "
    "--ckpt_path runs/real/smollm2_chain_sum/checkpoints/last.ckpt": _REAL.format("evaluates that fit's checkpoint"),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_model.py --out runs/real_model --seeds 0 --readout expected "
    "--samples 4 --override=--model.loss.divergence=reverse": _REAL.format("about an hour a seed (README)"),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_model.py --out runs/real_model --seeds 0 --readout expected "
    "--samples 4 --methods caopd --override=--model.loss.divergence=forward": _REAL.format("about an hour a seed"),
    **{
        "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_model.py --out runs/real_model --seeds "
        f"{seed} --readout expected --samples 4": _REAL.format("a held-out seed, about an hour (README)")
        for seed in (1, 2)
    },
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/confidence_targets.py --model "
    "runs/real_model/seed_0_fa150119/base": _REAL.format("it reads the benchmark's warm start of seed 0"),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/warm_start_format.py --steps 32 --marks 16 32": _REAL.format(
        "a warm-start probe of several minutes"
    ),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/warm_start_format.py --steps 24 --marks 12 24 --bare": (
        _REAL.format("a warm-start probe of several minutes")
    ),
    ".venv/bin/python -m caopd_pl fit --config configs/paper/qwen3_8b_science.yaml "
    "--model.model.name_or_path /models/Qwen3-8B --trainer.devices 8": _NODES,
    ".venv/bin/torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint "
    "$HEAD_NODE:29500 -m caopd_pl fit --config configs/paper/qwen3_8b_science.yaml "
    "--model.model.name_or_path /models/Qwen3-8B --trainer.num_nodes 2 --trainer.devices 8": _NODES,
    "srun .venv/bin/python -m caopd_pl fit --config configs/paper/qwen3_8b_science.yaml "
    "--model.model.name_or_path /models/Qwen3-8B --trainer.num_nodes 2 --trainer.devices 8": _NODES,
    ".venv/bin/python -m caopd_pl fit --config configs/paper/qwen3_8b_science.yaml "
    "--model.model.name_or_path /models/Qwen3-8B": _PAPER,
    ".venv/bin/python -m caopd_pl test --config configs/paper/qwen3_8b_science.yaml "
    "--model.model.name_or_path /models/Qwen3-8B "
    "--ckpt_path runs/paper/qwen3_8b_science/checkpoints/last.ckpt": _PAPER,
    ".venv/bin/python -m caopd_pl export --ckpt_path runs/paper/qwen3_8b_science/checkpoints/last.ckpt "
    "--out exports/qwen3_8b_science": "exports the paper fit's 8B checkpoint, which only that fit writes",
    "OMP_NUM_THREADS=1 .venv/bin/python -m caopd_pl continual --config configs/continual/quick.yaml": (
        "15 min measured beside other jobs (900 s); tests/continual runs the same runner on a smaller config, "
        "killed with SIGKILL mid-stage and resumed"
    ),
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_shape.py --out runs/real_shape": (
        "13 min 55 s measured; tests/test_real_shape.py runs the same fit/test/export path at a smaller width"
    ),
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/miscal_dev --seeds 0 1 2 3 4": (
        "a seed from nothing measured at 15 min 24 s alone, 5 seeds; tests/test_miscalibration_benchmark.py checks its "
        "aggregation and evaluation cache"
    ),
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/miscal_heldout --seeds 5 6 7": _MISCAL,
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/miscal_dev --seeds 0 1 2 "
    "--stratify level": _MISCAL,
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/miscal_dev --seeds 0 1 2 3 4 "
    "--estimator beta --methods caopd": _MISCAL,
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/miscal --seeds 0 1 2 "
    "--methods caopd --k 4": _MISCAL,
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/miscal --seeds 0 1 2 "
    "--methods caopd --k 4 --estimator beta": _MISCAL,
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/miscal --seeds 0 1 2 "
    "--methods caopd --k 8 --estimator beta": _MISCAL,
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kl_memory.py --dtype float32 bfloat16": _KL.format(
        "four losses timed at 23-29 s each, peaks up to 4,688 MiB"
    ),
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kl_memory.py --dtype bfloat16 --divergence jsd --repeats 2": (
        _KL.format("two losses timed at 20-26 s, peak 7,062 MiB")
    ),
}
"""Commands not run by ``readme_check.sh``: the one-line reason (their arguments are still parsed by the tests)."""


def readme_commands(readme: Path = README) -> list[str]:
    """The README's commands, in order, repeats included."""
    commands = []
    for language, body in re.findall(r"```(\w*)\n(.*?)```", readme.read_text(encoding="utf-8"), re.S):
        if language == "bash":
            lines = body.splitlines()
        elif language == "":
            lines = [line[2:] for line in body.splitlines() if line.startswith("$ ")]
        else:
            continue
        for line in lines:
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def plan(commands: list[str]) -> list[tuple[str, str, str]]:
    """``(kind, command, note)`` per command: ``run``; ``same`` (a repeat, note: where it ran first); ``declared``
    (note: why not run); ``unlisted`` (in neither group: ``readme_check.sh`` refuses to start).
    """
    first: dict[str, int] = {}
    rows = []
    for number, command in enumerate(commands, start=1):
        if command in first:
            rows.append(("same", command, f"same as #{first[command]}, run once"))
        elif command in RUN:
            first[command] = number
            rows.append(("run", command, ""))
        elif command in DECLARED:
            rows.append(("declared", command, DECLARED[command]))
        else:
            rows.append(("unlisted", command, "add it to RUN or DECLARED in scripts/readme_commands.py"))
    return rows


def main() -> int:
    """Print the plan as tab-separated lines; exit status 1 if a command is in neither group."""
    rows = plan(readme_commands())
    for row in rows:
        print("\t".join(row))
    return 1 if any(kind == "unlisted" for kind, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
