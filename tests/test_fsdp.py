"""Sharded training (FSDP2, :mod:`caopd_pl.sharding`) on CPU: 2 processes, gloo, a tiny Qwen3 built in code.

One FSDP optimizer step (chunked loss, AdamW, EMA on the shards) must give the loss, student and teacher a
single-process step gives on the same batch; and a 2-process ``fit`` through the CLI, SIGKILLed after an epoch and
resumed with ``--ckpt_path last``, must end where an uninterrupted run ends. GRPO (the RL baselines) likewise: two
steps on each rank's share of the rollouts give the single-process steps, the start model (the KL reference) held
sharded and fixed, and a 2-process bf16-true ``fit`` trains on policy against it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from helpers import (
    POLICY_PROBE,
    POLICY_SETTINGS,
    REPO,
    SCRIPTED_ENGINE,
    assert_resumed_like,
    distill_batch,
    fit,
    grpo_steps,
    metrics_rows,
    resume_config,
    rl_examples,
    wait_for,
)
from test_precision import local_model_config
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM

from caopd_pl.ema import ema_update
from caopd_pl.files import read_jsonl
from caopd_pl.losses import LossConfig
from caopd_pl.models.loading import ModelConfig
from caopd_pl.models.tiny import TinyModelConfig
from caopd_pl.module import CaOPDModule
from caopd_pl.rollout.base import RolloutConfig
from caopd_pl.rollout.hf import HFEngine
from caopd_pl.rollout.weights import iter_full_parameters
from caopd_pl.sharding import is_sharded, shard_model

WORLD = 2
GREEDY = RolloutConfig(num_samples=1, temperature=0.0, max_new_tokens=12)
FSDP_OPTIONS = (
    "--trainer.strategy",
    "{class_path: lightning.pytorch.strategies.ModelParallelStrategy, init_args: {data_parallel_size: 2, "
    "tensor_parallel_size: 1, save_distributed_checkpoint: false}}",
)
"""FSDP2 over 2 processes through the CLI, with full-state (single-file) checkpoints."""


PRECISIONS = {
    "fp32": (None, None),
    "bf16_teacher": (None, torch.bfloat16),  # model.teacher_dtype: bfloat16 beside an fp32 student
    "bf16_true": (torch.bfloat16, torch.bfloat16),  # the paper configs' bf16-true: student and teacher in bf16
}
"""(student dtype, teacher dtype) of each precision the sharded step is checked in; None keeps float32."""


def qwen3_module(tie: bool, precision: str = "fp32", **options) -> CaOPDModule:
    """A tiny Qwen3 student (3 layers; tied or untied output embedding) and its teacher, no dropout, in the dtypes of
    ``precision`` (:data:`PRECISIONS`); ``options``: more of the module's arguments."""
    shape = {"hidden_size": 32, "num_layers": 3, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
    spec = TinyModelConfig(architecture="qwen3", tie_word_embeddings=tie, **shape)
    module = CaOPDModule(ModelConfig(tiny=spec), LossConfig(chunk_size=3), ema_rate=0.25, **options)
    student_dtype, teacher_dtype = PRECISIONS[precision]
    if student_dtype is not None:
        module.student.to(dtype=student_dtype)
    if teacher_dtype is not None:
        module.teacher.to(dtype=teacher_dtype)
    with torch.no_grad():  # a teacher away from the student, so the loss and its gradient are not zero
        for param in module.teacher.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())))
    return module


def step_batch(vocab: int) -> dict[str, torch.Tensor]:
    """4 rows, 6 counted completion tokens each (equal counts: the mean over ranks is the global mean)."""
    return distill_batch(
        vocab, rows=4, length=10, prefix=4, completion=(3, 9), generator=torch.Generator().manual_seed(1)
    )


LR = 1e-2
"""one_step's AdamW learning rate."""


def one_step(module: CaOPDModule, batch: dict[str, torch.Tensor]) -> float:
    """Loss, backward, one AdamW step of the student, one EMA update of the teacher; the loss."""
    optimizer = torch.optim.AdamW(module.student.parameters(), lr=LR)
    loss, _ = module.distillation_loss(batch)
    loss.backward()
    optimizer.step()
    ema_update(module.teacher, module.student, module.ema_rate)
    return loss.item()


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in iter_full_parameters(model)}


def sharded_step(rank: int, port: int, out: str, precision: str = "fp32") -> None:
    """Rank ``rank`` of 2: shard both models, step on its half of the batch, save the gathered weights (rank 0)."""
    torch.set_num_threads(1)
    with gloo_group(rank, WORLD, port):
        mesh = dist.device_mesh.init_device_mesh("cpu", (WORLD,))
        results = {}
        for tie in (False, True):
            torch.manual_seed(0)
            module = qwen3_module(tie, precision)
            shard_model(module.student, mesh)
            shard_model(module.teacher, mesh)
            assert is_sharded(module.student) and is_sharded(module.teacher)
            batch = step_batch(module.student.config.vocab_size)
            local = {key: value[rank * 2 : rank * 2 + 2] for key, value in batch.items()}  # this rank's rows
            loss = torch.tensor(one_step(module, local))
            dist.all_reduce(loss)
            student, teacher = full_weights(module.student), full_weights(module.teacher)  # collectives: every rank
            results[tie] = {"loss": loss.item() / WORLD, "student": student, "teacher": teacher}
            results[tie]["rollouts_match"] = sharded_rollouts_match(module, student, rank)
        if rank == 0:
            torch.save(results, out)


def sharded_rollouts_match(module: CaOPDModule, weights: dict[str, torch.Tensor], rank: int) -> bool:
    """Whether the ``hf`` engine's greedy completions from the sharded student, on this rank's own prompts, are those
    of an unsharded copy loaded with the gathered weights, on every rank."""
    prompts = [module.tokenizer.encode(text) for text in (["12+3=", "hello"], ["7*8=?", "abc de"])[rank]]
    sharded = HFEngine(GREEDY, module.student, module.tokenizer).generate(prompts, seed=0)
    plain = qwen3_module(module.student.config.tie_word_embeddings).student.to(module.student.dtype)
    plain.load_state_dict(weights, strict=False)  # every parameter; the rotary buffers are constants
    expected = HFEngine(GREEDY, plain, module.tokenizer).generate(prompts, seed=0)
    same = torch.tensor(int([g[0].token_ids for g in sharded] == [g[0].token_ids for g in expected]))
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int | None = None):
    """The default process group of ``world`` CPU processes (gloo) on a local port, destroyed on exit."""
    port = free_port() if port is None else port
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_sharded_on_one_process_the_loss_and_lm_head_gradient_are_the_unsharded_ones():
    """The fast lane's check of the sharded path: FSDP2 over a 1-process gloo group (no other rank to wait for)."""
    with gloo_group(0, 1):
        plain, sharded = qwen3_module(tie=False), qwen3_module(tie=False)
        mesh = dist.device_mesh.init_device_mesh("cpu", (1,))
        shard_model(sharded.student, mesh)
        shard_model(sharded.teacher, mesh)
        batch = step_batch(plain.student.config.vocab_size)
        expected, _ = plain.distillation_loss(batch)
        loss, _ = sharded.distillation_loss(batch)
        expected.backward()
        loss.backward()
        head = sharded.student.lm_head.weight
        assert type(head).__name__ == "DTensor" and type(head.grad).__name__ == "DTensor"  # resharded after backward
        torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(head.grad.full_tensor(), plain.student.lm_head.weight.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("precision", ["bf16_teacher", "bf16_true"])
def test_sharded_on_one_process_a_low_precision_step_is_the_unsharded_one(precision):
    """The EMA's stochastic rounding of a bf16 teacher on DTensor shards (it crashed: a plain noise tensor added to a
    shard), at the paper configs' bf16-true and with a bf16 teacher beside an fp32 student."""
    with gloo_group(0, 1):
        torch.manual_seed(0)
        plain = qwen3_module(tie=False, precision=precision)
        torch.manual_seed(0)
        sharded = qwen3_module(tie=False, precision=precision)
        mesh = dist.device_mesh.init_device_mesh("cpu", (1,))
        shard_model(sharded.student, mesh)
        shard_model(sharded.teacher, mesh)
        batch = step_batch(plain.student.config.vocab_size)
        torch.manual_seed(1)
        expected = one_step(plain, batch)
        torch.manual_seed(1)  # the same stochastic-rounding noise: one rank's shard is the whole tensor
        loss = one_step(sharded, batch)
        assert loss == pytest.approx(expected, abs=1e-6)
        teacher = full_weights(sharded.teacher)
        for name, tensor in full_weights(plain.teacher).items():
            assert teacher[name].dtype == torch.bfloat16
            torch.testing.assert_close(teacher[name], tensor, atol=0, rtol=0, msg=name)


def assert_step_close(got: torch.Tensor, expected: torch.Tensor, precision: str, msg: str) -> None:
    """fp32: equal to 1e-5. Lower precision: equal within a couple of bf16 steps (2^-8 of the value) but for at most
    1% of the elements, none off by more than 2 lr plus that: AdamW's first step moves a weight by lr * sign(its
    gradient), and where a gradient is within bf16 rounding of zero, the sharded and the single-process sums (added
    in another order) can differ in sign (measured: 1 element in 512 of a few projections, off by lr)."""
    assert got.dtype == expected.dtype, msg
    if precision == "fp32":
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=msg)
        return
    difference = (got.float() - expected.float()).abs()
    beyond = difference > 1e-3 + 1e-2 * expected.float().abs()
    assert beyond.float().mean() <= 0.01 and difference.max() <= 2 * LR + 1e-2, msg


@pytest.mark.slow
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_one_fsdp_step_matches_a_single_process_step(tmp_path, precision):
    out = tmp_path / "sharded.pt"
    mp.spawn(sharded_step, args=(free_port(), str(out), precision), nprocs=WORLD, join=True)
    sharded = torch.load(out, weights_only=False)

    for tie in (False, True):
        torch.manual_seed(0)
        module = qwen3_module(tie, precision)
        before = full_weights(module.student)
        loss = one_step(module, step_batch(module.student.config.vocab_size))
        expected = {"student": full_weights(module.student), "teacher": full_weights(module.teacher)}

        got = sharded[tie]
        assert got["loss"] == pytest.approx(loss, abs=1e-5 if precision == "fp32" else 1e-2 * loss) and loss > 1e-3
        for side in ("student", "teacher"):
            assert got[side].keys() == expected[side].keys()
            for name, tensor in expected[side].items():
                assert_step_close(got[side][name], tensor, precision, f"{precision}: {side} {name}")
        assert got["rollouts_match"]
        # The step moved every weight the loss reaches, lm_head (the chunked loss's direct read) included.
        head = "lm_head.weight"
        assert not torch.allclose(expected["student"][head], before[head])


# ---- GRPO (the RL baselines): the sharded student's steps, the start model as the KL reference ----------------------


POLICY_LR = 1.0
"""policy_run's learning rate, of plain SGD: its step is the gradient, so a gradient of the wrong scale (summed over
ranks instead of averaged) would show, where AdamW's normalised first step hides it; large enough that the second
step's ratios leave the clip range in every setting."""


def policy_run(setting: str, precision: str, rank: int = 0, world: int = 1) -> dict:
    """Two GRPO steps (:func:`helpers.grpo_steps`) of ``setting`` (:data:`helpers.POLICY_SETTINGS`) on this rank's
    share of the examples; both models sharded over the ``world`` ranks when a process group is initialised.

    Returns (the same on every rank): each step's loss and statistics (averaged over ranks, tokens summed), the old
    log-probabilities of every example, the gathered student and teacher, the teacher before the steps, and whether
    the teacher (the KL reference) was held as shards over the ranks with no gradient.
    """
    reward, objective = POLICY_SETTINGS[setting]
    torch.manual_seed(0)
    optimizer = functools.partial(torch.optim.SGD, lr=POLICY_LR)
    module = qwen3_module(False, precision, policy_loss=objective, optimizer=optimizer)
    start = full_weights(module.teacher)
    if dist.is_initialized():
        mesh = dist.device_mesh.init_device_mesh("cpu", (world,))
        shard_model(module.student, mesh)
        shard_model(module.teacher, mesh)
    examples = rl_examples(module.tokenizer, reward)
    share = len(examples) // world  # whole groups of equal token counts: each rank's mean is its share of the mean
    local = examples[rank * share : (rank + 1) * share]
    steps = grpo_steps(module, local)
    teacher = list(module.teacher.parameters())
    held = all(isinstance(p, DTensor) and p.device_mesh.size() == world and p.grad is None for p in teacher)
    old = [example.old_logprobs for example in local]
    if world > 1:
        for step in steps:
            values = torch.tensor([step[key] for key in sorted(step)], dtype=torch.float64)
            dist.all_reduce(values)
            step |= {
                key: value / (1 if key == "tokens" else world) for key, value in zip(sorted(step), values.tolist())
            }
        gathered = [None] * world
        dist.all_gather_object(gathered, old)
        old = [row for part in gathered for row in part]
    student, teacher = full_weights(module.student), full_weights(module.teacher)  # collectives: every rank
    return {"steps": steps, "old": old, "student": student, "teacher": teacher, "start": start, "held": held}


def assert_policy_run_like(got: dict, expected: dict, precision: str, setting: str) -> None:
    """The sharded run's steps are the single-process run's (fp32 to 1e-5, bf16 within its rounding), and its
    reference, held sharded, is the start model bit for bit."""
    assert got["held"], f"{setting}: the reference is not held as shards without gradients"
    tolerance = 1e-5 if precision == "fp32" else 2e-2
    old, want = torch.tensor(sum(got["old"], [])), torch.tensor(sum(expected["old"], []))
    torch.testing.assert_close(old, want, atol=tolerance, rtol=0, msg=f"{setting}: old log-probabilities")
    assert len(got["steps"]) == len(expected["steps"]) == 2
    for index, (step, want) in enumerate(zip(got["steps"], expected["steps"])):
        assert step.keys() == want.keys() and ("kl" in want) == (POLICY_SETTINGS[setting][1].kl_coef > 0)
        for key, value in want.items():
            assert step[key] == pytest.approx(value, abs=tolerance), f"{setting}: step {index} {key}"
    for name, tensor in expected["student"].items():  # (SGD steps: AdamW's bf16 bound is a loose one for them)
        assert_step_close(got["student"][name], tensor, precision, f"{precision} {setting}: student {name}")
    for name, tensor in expected["start"].items():  # the start model, never updated: the KL reference
        assert torch.equal(got["teacher"][name], tensor) and torch.equal(got["start"][name], tensor), name
    # Something to match: the student moved, the second step's ratios left the clip range, a penalty is nonzero.
    head = "lm_head.weight"
    assert not torch.allclose(expected["student"][head], expected["start"][head])
    assert expected["steps"][1]["clip_fraction"] > 0
    assert all(step.get("kl", 1.0) > 0 for step in expected["steps"])


@pytest.mark.parametrize("precision", ["fp32", "bf16_true"])
def test_sharded_on_one_process_grpo_steps_are_the_unsharded_ones(precision):
    """GRPO's fast-lane check of the sharded path (1-process gloo group): rlvr and rlcr, without a KL penalty and
    with either estimator, both averages."""
    for setting in POLICY_SETTINGS:
        expected = policy_run(setting, precision)
        with gloo_group(0, 1):
            got = policy_run(setting, precision)
        assert_policy_run_like(got, expected, precision, setting)


def sharded_policy_runs(rank: int, port: int, out: str, precision: str) -> None:
    """Rank ``rank`` of 2: every GRPO setting's :func:`policy_run` on its half of the examples; rank 0 saves them."""
    torch.set_num_threads(1)
    with gloo_group(rank, WORLD, port):
        results = {setting: policy_run(setting, precision, rank, WORLD) for setting in POLICY_SETTINGS}
    if rank == 0:
        torch.save(results, out)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16_true"])
def test_two_grpo_steps_on_two_ranks_match_a_single_process(tmp_path, precision):
    out = tmp_path / "sharded.pt"
    mp.spawn(sharded_policy_runs, args=(free_port(), str(out), precision), nprocs=WORLD, join=True)
    sharded = torch.load(out, weights_only=False)
    for setting in POLICY_SETTINGS:
        assert_policy_run_like(sharded[setting], policy_run(setting, precision), precision, setting)


@pytest.mark.slow
def test_a_two_process_fsdp_grpo_fit_in_bf16_true_trains_on_policy_against_its_start_model(tmp_path):
    """The RL baselines as a researcher runs them at scale: FSDP2 over 2 processes, bf16-true, rlcr with a KL penalty.

    Issue 27: the old log-probabilities and the temperature reached the step rounded to bf16, so the first step on
    fresh rollouts was not on-policy (|log ratio| up to 0.01 on this tiny model).
    """
    config, base = local_model_config(tmp_path, max_epochs=2, policy_loss={"kl_coef": 0.1}, validate_start=False)
    values = yaml.safe_load(config.read_text())
    values["trainer"] |= {"devices": WORLD, "accelerator": "cpu", "precision": "bf16-true", "limit_val_batches": 0}
    values["trainer"]["callbacks"].append({"class_path": POLICY_PROBE, "init_args": {"log": str(tmp_path / "probe")}})
    values["data"] |= {"rl": {"reward": "rlcr"}}
    values["data"]["rollout"]["engine"] = SCRIPTED_ENGINE
    config.write_text(yaml.safe_dump(values))
    fit(config, *FSDP_OPTIONS)

    rows = read_jsonl(tmp_path / "probe")
    epochs = sorted((row["rank"], row["epoch"]) for row in rows if "epoch" in row)
    assert epochs == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(row["log_ratio"] <= 1e-4 and row["reference_sharded"] for row in rows if "epoch" in row), rows
    assert [row["reference_moved"] for row in rows if "reference_moved" in row] == [[], []]  # each rank's shards
    saved = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    start = AutoModelForCausalLM.from_pretrained(base).to(torch.bfloat16).state_dict()
    assert all(torch.equal(saved[f"teacher.{name}"], value) for name, value in start.items())  # the start model
    assert not all(torch.equal(saved[f"student.{name}"], value) for name, value in start.items())
    logged = [row for row in metrics_rows(tmp_path) if row.get("train/kl")]
    assert [float(row["rollout/flat_groups"]) for row in logged] == [0.0, 0.0] and float(logged[-1]["train/kl"]) > 0


def launch(config: Path) -> subprocess.Popen:
    """The 2-process FSDP ``fit`` of ``config`` in a new process group (its ranks are killed together)."""
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = [sys.executable, "-m", "caopd_pl", "fit", "--config", str(config), *FSDP_OPTIONS]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def as_fsdp(config: Path) -> Path:
    """``config`` on a tiny Qwen3 with an untied output embedding (as Qwen3-8B), on 2 CPU processes."""
    values = yaml.safe_load(config.read_text())
    values["model"]["model"]["tiny"] |= {"architecture": "qwen3", "tie_word_embeddings": False}
    values["trainer"] |= {"devices": WORLD, "accelerator": "cpu"}
    config.write_text(yaml.safe_dump(values))
    return config


@pytest.mark.slow
def test_two_process_fsdp_fit_killed_after_an_epoch_resumes_to_the_same_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    fit(as_fsdp(resume_config(straight)), *FSDP_OPTIONS)

    marker = killed / "paused.json"
    process = launch(as_fsdp(resume_config(killed, pause_epoch=1, pause_batch=0, marker=str(marker))))
    wait_for(marker, process)
    os.killpg(process.pid, signal.SIGKILL)  # every rank at once, as a scheduler ends a job (rank 1 is rank 0's child)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    saved = torch.load(killed / "checkpoints/last.ckpt", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] < json.loads(marker.read_text())["step"]

    fit(as_fsdp(resume_config(killed)), *FSDP_OPTIONS, "--ckpt_path", "last")

    assert_resumed_like(straight, killed)
