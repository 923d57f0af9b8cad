"""Dress rehearsal of the paper's setting at the paper's shapes, on CPU, with a random-weight Qwen3.

No checkpoint can be downloaded here, so this builds one: a random-weight model of Qwen3's architecture
(``Qwen3Config``, Qwen3's vocabulary of 151,936, untied embeddings like Qwen3-8B, depth and width reduced to fit a
CPU) beside a byte-level BPE tokenizer with Qwen3's special tokens and chat format (:mod:`caopd_pl.models.bpe`), and
a Qwen3-style ``generation_config`` (two EOS ids, top-k 20, ...). Then, for each task, starting from the paper's
base config (``configs/paper/base.yaml``, what every paper setup shares) with only the model, the task and its
paths, the lengths, the sizes and the device set (nothing else), it runs the real CLI:

  fit (one short epoch: rollouts of ~1,024 tokens from prompts of ~512, gradient checkpointing on, fp32),
  test on the paper's evaluation rows, export to a Hugging Face directory (reloaded in ``transformers`` and in vLLM,
  which must agree on greedy tokens; ``--no-vllm`` skips vLLM),

and checks what each stage wrote. Science trains on rows of ``../shared/data/caopd-eval/science`` rewritten in the
released *training* format (``messages`` + ``output_text`` with the letter inside ``<answer>``), the prompts closest to
512 tokens, and tests on the evaluation rows as released; absent that folder, science is skipped with the reason.
Tool use trains on generated rows in the released training format (``prompt``, ``golden_answer``,
``golden_response`` as a list of strings) and tests on ``../shared/data/caopd-eval/tooluse`` (generated rows when
absent). Random weights never write the answer format, so nearly every verdict is wrong: what must hold is that every
stage runs at these shapes and writes sane outputs.

``measure`` prints seconds per optimizer step and the peak memory of one step at the full shape in fp32 and in bf16
weights, and the peak-memory ratio with gradient checkpointing on vs off. Each measurement runs in a fresh process;
peak memory is that process's resident-set high-water mark (``ru_maxrss``), model loading included, and the rise
above the resident set after loading (what the step itself added) is printed beside it.

    OMP_NUM_THREADS=1 python benchmarks/real_shape.py --out runs/real_shape            # rehearse, then measure
    OMP_NUM_THREADS=1 python benchmarks/real_shape.py rehearse --out runs/real_shape --tasks tooluse
    OMP_NUM_THREADS=1 python benchmarks/real_shape.py measure --out runs/real_shape
"""

import argparse
import dataclasses
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "caopd-eval"
PAPER_BASE = ROOT / "configs/paper/base.yaml"
TASKS = ("science", "tooluse")


@dataclass(frozen=True)
class Shape:
    """A random-weight Qwen3 and the lengths it is run at."""

    vocab_size: int = 151_936
    """Rows of the embedding and output layers (Qwen3's)."""
    hidden_size: int = 256
    """Residual width (Qwen3-8B: 4,096)."""
    num_layers: int = 4
    """Decoder layers (Qwen3-8B: 36)."""
    num_heads: int = 4
    """Query heads; head dim = hidden_size / num_heads (Qwen3: 128)."""
    num_kv_heads: int = 2
    """Key/value heads (Qwen3-8B: 8)."""
    intermediate_size: int = 768
    """MLP width (Qwen3-8B: 12,288)."""
    tie_word_embeddings: bool = False
    """Untied, as Qwen3-8B (0.6B-4B tie them)."""
    prompt_tokens: int = 512
    """Target prompt length."""
    completion_tokens: int = 1024
    """Rollout and evaluation length (the reference's ``max_completion_length``)."""
    bpe_size: int = 8_000
    """Tokens of the trained BPE; the rest of the vocabulary is reserved tokens."""


FULL = Shape()
"""The rehearsal's shape."""

# ---- the checkpoint -----------------------------------------------------------------------------------------------


def write_checkpoint(shape: Shape, out: Path, dtype: str = "float32") -> Path:
    """Save a random-weight Qwen3 of ``shape`` with the BPE tokenizer and a Qwen3-style generation config to ``out``."""
    import torch
    from transformers import GenerationConfig

    from caopd_pl.models.bpe import PAD, build_qwen3_style_tokenizer
    from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model

    tokenizer = build_qwen3_style_tokenizer(shape.vocab_size, shape.bpe_size)
    spec = TinyModelConfig(
        architecture="qwen3",
        hidden_size=shape.hidden_size,
        num_layers=shape.num_layers,
        num_heads=shape.num_heads,
        num_kv_heads=shape.num_kv_heads,
        intermediate_size=shape.intermediate_size,
        max_positions=40_960,  # Qwen3's (rotary positions: no parameters)
        tie_word_embeddings=shape.tie_word_embeddings,
    )
    model = build_tiny_model(spec, shape.vocab_size, tokenizer.pad_token_id, tokenizer.eos_token_id)
    # What Qwen3's instruct checkpoints ship: two stop ids and sampling defaults the rollouts must not inherit.
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(PAD)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_k=20,
        top_p=0.95,
    )
    model.to(getattr(torch, dtype)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# ---- data in the released formats ---------------------------------------------------------------------------------


def science_rows(source: Path, count: int, prompt_tokens: int, tokenizer) -> list[dict[str, Any]]:
    """``count`` evaluation rows whose prompts are closest to ``prompt_tokens``, in the released training format."""
    import datasets

    from caopd_pl.tasks.science import parse_messages
    from caopd_pl.templates import prompt_ids

    rows = [dict(row) for row in datasets.load_from_disk(str(source))]
    messages = [parse_messages(row["prompt"]) for row in rows]
    lengths = [len(prompt_ids(tokenizer, m)) for m in messages]
    chosen = sorted(range(len(rows)), key=lambda i: abs(lengths[i] - prompt_tokens))[:count]
    return [
        {
            "messages": messages[i],
            "output_text": "<reasoning>\nThe product keeps the scaffold of one option only.\n</reasoning>\n"
            f"<answer>\n{rows[i]['answer']}\n</answer>",
        }
        for i in chosen
    ]


def tooluse_rows(count: int, prompt_tokens: int, tokenizer, seed: int = 0) -> list[dict[str, Any]]:
    """Generated ToolAlpaca-style rows of ~``prompt_tokens`` prompt tokens, in the released training format."""
    from caopd_pl.tasks.science import parse_messages
    from caopd_pl.templates import prompt_ids

    rng = random.Random(seed)
    rows = []
    for index in range(count):
        name = f"Service{index}"
        endpoints = []
        row = {}
        while not endpoints or len(prompt_ids(tokenizer, parse_messages(row["prompt"]))) < prompt_tokens:
            endpoints.append(_endpoint(rng, len(endpoints)))
            row = _tooluse_row(name, endpoints, rng)
        rows.append(row)
    return rows


def _endpoint(rng: random.Random, index: int) -> tuple[str, str, str]:
    noun = rng.choice(("Weather", "Image", "Price", "Fact", "Route", "Book", "Recipe", "Event"))
    key = rng.choice(("city", "query", "color", "date", "currency", "limit"))
    doc = (
        f'Retrieve {noun.lower()} information for a given {key}.\nParameters: {{"{key}": "string. The {key} to '
        f'look up.", "page": "integer. The page number."}}\nOutput: Successful response.\n - Format: '
        f"application/json\n - Structure: Object{{results: Array[Object{{id, {noun.lower()}, source}}]}}"
    )
    return f"get{noun}{index}", key, doc


def _tooluse_row(name: str, endpoints: list[tuple[str, str, str]], rng: random.Random) -> dict[str, Any]:
    documentation = "\n".join(f"{action}: {doc}" for action, _, doc in endpoints)
    action, key, _ = rng.choice(endpoints)
    value = rng.choice(("Paris", "red", "2024-05-01", "EUR", "bread"))
    question = f"Can you look up the {key} {value} for me?"
    prompt = (
        "Your task is to answer the user's question using available tools. \nYou have access to the following "
        f"tools:\nName: {name}\nDescription: A generated service\nDocumentation:\n{documentation}\n\nUse the "
        "following format:\nThought: you should always think about what to do\nAction: the action to take, should "
        "be one of the tool names.\nAction Input: the input to the action, must be in JSON format. All of the action "
        f"input must be realistic and from the user.\n\nBegin!\nQuestion: {question}"
    )
    action_input = json.dumps({key: value})
    return {
        "prompt": prompt,
        "golden_answer": [{"Action": action, "Action_Input": action_input}],
        "golden_response": [
            f"Thought: I should call {action} with the {key}.",
            f"Action: {action}",
            f"Action Input: {action_input}",
        ],
    }


def write_dataset(rows: list[dict[str, Any]], out: Path) -> str:
    """``rows`` as a ``datasets`` folder (``save_to_disk``), the released files' format."""
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(out))
    return str(out)


# ---- the CLI runs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One task's rehearsal settings."""

    task: str
    prompts: int = 2
    """Training prompts in the epoch (and evaluation rows)."""
    samples: int = 2
    """K rollouts per prompt."""
    batch_size: int = 2
    """Distillation examples per micro-batch."""
    accumulate: int = 1
    """Micro-batches per optimizer step."""
    dtype: str = "float32"
    """Student weight dtype (``model.model.dtype``)."""
    precision: str = "32-true"
    """``trainer.precision``."""


def rehearsal_config(run: Run, shape: Shape, checkpoint: Path, task: dict[str, Any], out: Path) -> Path:
    """The paper's base config with ``task``, the model, sizes, lengths and device set; written to ``out``."""
    config = yaml.safe_load(PAPER_BASE.read_text())
    steps = max(1, math.ceil(run.prompts * run.samples / run.batch_size / run.accumulate))
    trainer, model, data = config["trainer"], config["model"], config["data"]
    trainer.update(
        accelerator="cpu",
        devices=1,
        precision=run.precision,
        max_epochs=1,
        accumulate_grad_batches=run.accumulate,
        default_root_dir=str(out),
        enable_progress_bar=False,
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    # default_root_dir (above) places the logs, the checkpoints and the test results: the CLI derives each from it
    model["model"].update(name_or_path=str(checkpoint), dtype=run.dtype, gradient_checkpointing=True)
    model["eval_max_new_tokens"] = shape.completion_tokens
    if model.get("scheduler"):
        model["scheduler"]["init_args"]["total_steps"] = max(steps, 20)  # OneCycleLR needs pct_start * total_steps >= 2
    data.update(task=task, prompts_per_epoch=run.prompts, batch_size=run.batch_size, eval_batch_size=run.prompts)
    data["rollout"].update(engine="hf", num_samples=run.samples, max_new_tokens=shape.completion_tokens)
    data["rollout"]["batch_size"] = run.prompts * run.samples
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(args: list[str], log: Path) -> float:
    """Run ``python -m caopd_pl ARGS`` in a subprocess, output to ``log``; the wall-clock seconds.

    Raises:
        RuntimeError: the command failed (the end of its log is in the message).
    """
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call(
            [sys.executable, "-m", "caopd_pl", *args], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT
        )
    if code:
        raise RuntimeError(
            f"python -m caopd_pl {' '.join(args)} failed ({code}); end of {log}:\n{log.read_text()[-3000:]}"
        )
    return time.perf_counter() - start


def task_spec(run: Run, shape: Shape, tokenizer, data_dir: Path) -> dict[str, Any] | str:
    """The ``data.task`` of ``run``: training rows written under ``data_dir``; a string is why the task is skipped."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if run.task == "science":
        source = SHARED_DATA / "science"
        if not source.is_dir():
            return f"skipped: {source} is absent (the paper's evaluation rows)"
        rows = science_rows(source, run.prompts, shape.prompt_tokens, tokenizer)
        train = write_dataset(rows, data_dir / "science_train")
        init = {"train": train, "test": str(source), "limit": run.prompts}
        return {"class_path": "caopd_pl.tasks.science.ScienceTask", "init_args": init}
    train = write_dataset(tooluse_rows(run.prompts, shape.prompt_tokens, tokenizer), data_dir / "tooluse_train")
    test = SHARED_DATA / "tooluse"
    if not test.is_dir():
        test = Path(write_dataset(tooluse_rows(run.prompts, shape.prompt_tokens, tokenizer, seed=1), data_dir / "t"))
    init = {"train": train, "test": str(test), "limit": run.prompts}
    return {"class_path": "caopd_pl.tasks.tooluse.ToolUseTask", "init_args": init}


def train_prompt_lengths(task: dict[str, Any], tokenizer) -> list[int]:
    """Token counts of the student prompts of the training split, chat template and confidence instruction included."""
    from caopd_pl.continual.runner import instantiate_task
    from caopd_pl.templates import prompt_ids

    return [len(prompt_ids(tokenizer, e.student_messages())) for e in instantiate_task(task).split("train")]


def rehearse(run: Run, shape: Shape, checkpoint: Path, out: Path, vllm: bool = False) -> dict[str, Any]:
    """fit, test and export ``run`` through the CLI; what each stage wrote, checked. A skipped task says why.

    With ``vllm`` the export is also loaded in vLLM, which must decode it greedily as ``transformers`` does.
    """
    from caopd_pl.models.loading import load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(str(checkpoint))
    task = task_spec(run, shape, tokenizer, out / "data")
    if isinstance(task, str):
        return {"task": run.task, "skipped": task}
    config = rehearsal_config(run, shape, checkpoint, task, out)
    report: dict[str, Any] = {"task": run.task, "train_prompt_tokens": train_prompt_lengths(task, tokenizer)}
    report["seconds"] = {}
    report["seconds"]["fit"] = cli(["fit", "--config", str(config)], out / "fit.log")
    ckpt = out / "checkpoints" / "last.ckpt"
    report["fit"] = check_fit(out, ckpt)
    report["seconds"]["test"] = cli(["test", "--config", str(config), "--ckpt_path", str(ckpt)], out / "test.log")
    report["test"] = check_test(out, run.prompts)
    export = out / "export"
    report["seconds"]["export"] = cli(["export", "--ckpt_path", str(ckpt), "--out", str(export)], out / "export.log")
    report["export"] = check_export(export, shape, vllm)
    return report


# ---- what each stage wrote ----------------------------------------------------------------------------------------


def _test_dir(out: Path) -> Path:
    # Where ``test`` wrote its results (``test/<checkpoint>/``, or the logger's folder): the newest metrics.json.
    found = sorted(out.rglob("metrics.json"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise AssertionError(f"test wrote no metrics.json under {out}")
    return found[-1].parent


def check_fit(out: Path, ckpt: Path) -> dict[str, Any]:
    """The checkpoint exists and the epoch logged a finite loss over real-length completions.

    Raises:
        AssertionError: something is missing or not finite.
    """
    import csv

    if not ckpt.is_file():
        raise AssertionError(f"fit wrote no {ckpt}")
    rows = list(csv.DictReader((_fit_log_dir(out) / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    last = {k: v for r in rows for k, v in r.items() if v}
    if not losses or not all(math.isfinite(x) for x in losses):
        raise AssertionError(f"fit logged no finite train/loss: {losses}")
    tokens = float(last["train/tokens"])
    return {
        "checkpoint_mb": round(ckpt.stat().st_size / 2**20),
        "losses": losses,
        "completion_tokens": tokens,
        **{k: float(v) for k, v in last.items() if k.startswith("rollout/")},
    }


def _fit_log_dir(out: Path) -> Path:
    for version in sorted((out / "logs").glob("version_*")):
        if (version / "metrics.csv").is_file() and "train/loss" in (version / "metrics.csv").read_text():
            return version
    raise AssertionError(f"no fit metrics.csv under {out / 'logs'}")


def check_test(out: Path, count: int) -> dict[str, Any]:
    """``metrics.json`` covers ``count`` answers and every prediction has a completion.

    Raises:
        AssertionError: a file is missing or does not match.
    """
    log_dir = _test_dir(out)
    metrics = json.loads((log_dir / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (log_dir / "test_predictions.jsonl").read_text().splitlines()]
    if metrics["n"] != count or len(predictions) != count or not (log_dir / "reliability.png").is_file():
        raise AssertionError(f"test wrote n={metrics['n']} and {len(predictions)} predictions, expected {count}")
    return {"metrics": metrics, "completion_chars": [len(p["completion"]) for p in predictions]}


GREEDY_TOKENS = 8
"""Greedy tokens compared between the exported model in ``transformers`` and in vLLM."""


def check_export(export: Path, shape: Shape, vllm: bool = False) -> dict[str, Any]:
    """The exported folder loads with ``transformers`` as it is, at ``shape``, and decodes greedily.

    Args:
        export: The folder ``python -m caopd_pl export`` wrote.
        shape: The shape it must have.
        vllm: Also load the folder in vLLM (a fresh process) and require the same greedy tokens.

    Raises:
        AssertionError: a file is missing, the reloaded model has another shape, or vLLM decodes otherwise.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from caopd_pl.models.loading import load_tokenizer

    missing = [n for n in ("config.json", "generation_config.json", "tokenizer.json") if not (export / n).is_file()]
    if missing or not list(export.glob("*.safetensors")):
        raise AssertionError(f"export is missing {missing or '*.safetensors'} in {export}")
    model = AutoModelForCausalLM.from_pretrained(export)
    tokenizer = load_tokenizer(str(export))
    if model.config.vocab_size != shape.vocab_size or len(tokenizer) != shape.vocab_size:
        raise AssertionError(f"exported vocab {model.config.vocab_size}/{len(tokenizer)}, expected {shape.vocab_size}")
    ids = _greeting_ids(tokenizer)
    with torch.no_grad():
        new = model.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False)[0, len(ids) :]
    report = {"files": sorted(p.name for p in export.iterdir()), "dtype": str(model.dtype), "greedy_ids": new.tolist()}
    if vllm:
        report["vllm_greedy_ids"] = _child_json(["_vllm", "--checkpoint", str(export)])["greedy_ids"]
        if report["vllm_greedy_ids"] != report["greedy_ids"]:
            raise AssertionError(f"vLLM decodes the export otherwise: {report}")
    return report


def _greeting_ids(tokenizer) -> list[int]:
    from caopd_pl.templates import prompt_ids

    return prompt_ids(tokenizer, [{"role": "user", "content": "Hi"}])


def vllm_child(export: str) -> dict[str, Any]:
    """In this (fresh) process: load ``export`` in vLLM as it is and decode greedily (CPU settings of the engine)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams

    from caopd_pl.models.loading import load_tokenizer

    llm = LLM(
        model=export,
        dtype="float32",
        max_model_len=2048,
        seed=0,
        enforce_eager=True,
        enable_chunked_prefill=False,
        kv_cache_memory_bytes=2**28,
        generation_config="vllm",
    )
    prompt = {"prompt_token_ids": _greeting_ids(load_tokenizer(export))}
    output = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=GREEDY_TOKENS), use_tqdm=False)
    return {"greedy_ids": list(output[0].outputs[0].token_ids)}


def _child_json(args: list[str]) -> dict[str, Any]:
    # This file's ``_step``/``_vllm`` command in a fresh process; its last stdout line is JSON.
    done = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- step time and peak memory ------------------------------------------------------------------------------------


def step_child(checkpoint: str, dtype: str, checkpointing: bool, batch: int, shape: Shape, steps: int) -> dict:
    """In this (fresh) process: ``steps`` optimizer steps on one micro-batch of ``batch`` real-length sequences.

    The step is the module's: student and teacher final hidden states, the chunked reverse KL over the vocabulary,
    backward, gradient clipping at 1.0, AdamW, the EMA update. The teacher prompt is the student prompt plus a
    256-token demonstration, as the demo template makes it longer.
    """
    import torch

    from caopd_pl.data import DistillExample, collate_distill
    from caopd_pl.ema import ema_update
    from caopd_pl.models.loading import ModelConfig
    from caopd_pl.module import CaOPDModule

    module = CaOPDModule(model=ModelConfig(name_or_path=checkpoint, dtype=dtype, gradient_checkpointing=checkpointing))
    module.train()
    optimizer = torch.optim.AdamW(module.student.parameters(), lr=2e-5)
    rng = torch.Generator().manual_seed(0)
    top = module.tokenizer.pad_token_id  # ids below the added tokens: plain BPE text

    def ids(n: int) -> list[int]:
        return torch.randint(0, top, (n,), generator=rng).tolist()

    examples = [
        DistillExample(ids(shape.prompt_tokens), ids(shape.prompt_tokens + 256), ids(shape.completion_tokens))
        for _ in range(batch)
    ]
    tensors = collate_distill(examples, pad_id=module.tokenizer.pad_token_id)
    loaded = _rss_mb()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss, _ = module.distillation_loss(tensors)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(module.teacher, module.student, 0.01)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {
        "seconds_per_step": min(times),
        "steps": steps,
        "peak_mb": round(peak),
        "loaded_mb": round(loaded),
        "loss": loss.item(),
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_step(checkpoint: Path, dtype: str, checkpointing: bool, batch: int, shape: Shape, steps: int) -> dict:
    """:func:`step_child` in a fresh process, so that its peak memory is its own."""
    args = ["_step", "--checkpoint", str(checkpoint), "--dtype", dtype, "--batch", str(batch), "--steps", str(steps)]
    args += ["--shape", json.dumps(dataclasses.asdict(shape))] + (["--checkpointing"] if checkpointing else [])
    return _child_json(args)


def _line(label: str, shape: Shape, batch: int, result: dict) -> str:
    return (
        f"{label:<34} layers {shape.num_layers:>2} hidden {shape.hidden_size} vocab {shape.vocab_size} batch {batch}"
        f" x ({shape.prompt_tokens}+{shape.completion_tokens}): {result['seconds_per_step']:7.2f} s/step  peak "
        f"{result['peak_mb']:>6} MiB (after load {result['loaded_mb']} MiB)"
    )


def measure(out: Path, batch: int, steps: int, depth: int, ratio_batch: int) -> list[str]:
    """The printed lines: fp32 and bf16 at the full shape, and checkpointing on vs off at ``depth`` layers.

    The on/off comparison runs deeper and on more sequences than the rehearsal's model, where activations, not the
    vocabulary-sized embedding, output layer, gradients and AdamW moments, dominate memory (as at 8B: 36 layers).
    """
    lines = []
    for dtype in ("float32", "bfloat16"):
        result = measure_step(_checkpoint(out, FULL, dtype), dtype, True, batch, FULL, steps)
        lines.append(_line(f"{dtype} weights, checkpointing on", FULL, batch, result))
        print(lines[-1], flush=True)
    deep = dataclasses.replace(FULL, num_layers=depth)
    path = _checkpoint(out, deep, "float32")
    on, off = (measure_step(path, "float32", flag, ratio_batch, deep, 1) for flag in (True, False))
    lines.append(_line("float32, checkpointing on", deep, ratio_batch, on))
    lines.append(_line("float32, checkpointing off", deep, ratio_batch, off))
    rise = (on["peak_mb"] - on["loaded_mb"]) / max(off["peak_mb"] - off["loaded_mb"], 1)
    lines.append(f"checkpointing on/off: peak {on['peak_mb'] / off['peak_mb']:.2f}, rise above loaded {rise:.2f}")
    print(*lines[-3:], sep="\n", flush=True)
    return lines


def _checkpoint(out: Path, shape: Shape, dtype: str) -> Path:
    path = out / f"checkpoint_L{shape.num_layers}_H{shape.hidden_size}_V{shape.vocab_size}_{dtype}"
    if not (path / "config.json").is_file():
        write_checkpoint(shape, path, dtype)
    return path


# ---- entry point --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="all", choices=("all", "rehearse", "measure", "_step", "_vllm"))
    parser.add_argument("--out", type=Path, default=ROOT / "runs/real_shape")
    parser.add_argument("--tasks", nargs="+", default=["science", "tooluse"], choices=TASKS)
    parser.add_argument("--batch", type=int, default=2, help="sequences per measured optimizer step")
    parser.add_argument("--steps", type=int, default=2, help="measured steps (the fastest is printed)")
    parser.add_argument("--depth", type=int, default=28, help="layers of the checkpointing on/off comparison")
    parser.add_argument("--ratio-batch", type=int, default=4, help="sequences of the checkpointing on/off comparison")
    parser.add_argument("--checkpoint"), parser.add_argument("--dtype"), parser.add_argument("--shape")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--no-vllm", action="store_true", help="skip loading the exports in vLLM")
    args = parser.parse_args(argv)
    if args.command == "_vllm":
        print(json.dumps(vllm_child(args.checkpoint)))
        return 0
    if args.command == "_step":
        shape = Shape(**json.loads(args.shape))
        print(json.dumps(step_child(args.checkpoint, args.dtype, args.checkpointing, args.batch, shape, args.steps)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    if args.command in ("all", "rehearse"):
        checkpoint = _checkpoint(args.out, FULL, "float32")
        for task in args.tasks:
            report = rehearse(Run(task), FULL, checkpoint, args.out / task, vllm=not args.no_vllm)
            (args.out / f"{task}_report.json").write_text(json.dumps(report, indent=2) + "\n")
            lines.append(f"{task}: {json.dumps(report.get('skipped') or report['seconds'])}")
            print(lines[-1], flush=True)
    if args.command in ("all", "measure"):
        lines += measure(args.out, args.batch, args.steps, args.depth, args.ratio_batch)
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
