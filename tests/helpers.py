"""Configs, readers and batches shared by the tests (imported as ``helpers``: tests/ is on ``sys.path``)."""

from __future__ import annotations

import csv
import hashlib
import json
import operator
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from lightning.pytorch import Callback
from torch.distributed.tensor import DTensor

from caopd_pl.grpo import (
    PolicyExample,
    PolicyLossConfig,
    RLConfig,
    batch_floats,
    collate_policy,
    completion_logprobs,
    policy_examples,
    score_old_logprobs,
)
from caopd_pl.rewards import make_reward
from caopd_pl.rollout.base import Rollout, RolloutEngine
from caopd_pl.sharding import is_sharded, run_as_forward

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
"""``model.model.tiny`` of the test configs: a tiny model that trains in seconds."""


def small_config(root: Path, max_epochs: int = 2) -> Path:
    """The quickstart config, shrunk to seconds and pointed at ``root``."""
    config = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    trainer = config["trainer"]
    trainer |= {
        "max_epochs": max_epochs,
        "default_root_dir": str(root),
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
    }
    model = config["model"]
    model["model"]["tiny"] = dict(TINY_MODEL)
    model["warm_start"] |= {"steps": 4, "batch_size": 8}
    model["eval_max_new_tokens"] = 8
    data = config["data"]
    data["task"]["init_args"] |= {"num_train": 40, "num_val": 8, "num_test": 8}
    data["rollout"] |= {"num_samples": 2, "max_new_tokens": 8}
    data |= {"prompts_per_epoch": 4, "batch_size": 4, "max_eval_prompts": 8}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def metrics_rows(root: Path) -> list[dict]:
    """The rows of the run's ``logs/version_*/metrics.csv`` (exactly one run under ``root``)."""
    (path,) = root.glob("logs/version_*/metrics.csv")
    return list(csv.DictReader(path.open()))


def distill_batch(
    vocab: int,
    rows: int = 2,
    length: int = 8,
    prefix: int = 5,
    completion: tuple[int, int] = (2, 7),
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """A distillation batch of ``rows`` sequences of ``length`` tokens; the teacher's have a privileged prefix.

    Token ids are drawn from [3, vocab) (student ids first, then the prefix; the global generator when ``generator``
    is None); the masks select positions ``completion`` [start, end) of the student and the same tokens, shifted by
    ``prefix``, of the teacher.
    """
    student_ids = torch.randint(3, vocab, (rows, length), generator=generator)
    prefix_ids = torch.randint(3, vocab, (rows, prefix), generator=generator)
    teacher_ids = torch.cat([prefix_ids, student_ids], dim=1)  # a privileged prefix, same tokens
    student_mask = torch.zeros(rows, length, dtype=torch.bool)
    teacher_mask = torch.zeros(rows, prefix + length, dtype=torch.bool)
    start, end = completion
    student_mask[:, start:end] = teacher_mask[:, prefix + start : prefix + end] = True
    batch = dict(student_ids=student_ids, student_attention=torch.ones_like(student_ids), student_mask=student_mask)
    batch |= dict(teacher_ids=teacher_ids, teacher_attention=torch.ones_like(teacher_ids), teacher_mask=teacher_mask)
    return batch


# ---- GRPO (the RL baselines) ---------------------------------------------------------------------------------------

POLICY_SETTINGS = {
    "rlvr": ("rlvr", PolicyLossConfig(chunk_size=3)),  # no KL penalty: the start model is never run
    "rlcr_k3": ("rlcr", PolicyLossConfig(kl_coef=0.5, chunk_size=3)),
    "rlcr_exact_token": ("rlcr", PolicyLossConfig(kl="exact", kl_coef=0.5, average="token", chunk_size=3)),
}
"""(reward, objective) of each GRPO setting the sharded and LoRA steps are checked in: both rewards, both KL
estimators and none, both averages."""
POLICY_TEXTS = ("Answer: 15\nConfidence: 0.90", "Answer: 7\nConfidence: 0.2")
"""The two completions every prompt of :func:`rl_examples` gets (of different lengths, with stated confidences)."""
POLICY_VERDICTS = ((True, False), (False, True), (False, False), (True, True))
"""Whether each completion is right, per prompt (cycled): under ``rlvr`` the last two groups are flat, under
``rlcr`` the stated confidences still tell them apart."""
TEMPERATURE = 0.7


def rl_examples(tokenizer, reward: str, prompts: int = 4) -> list[PolicyExample]:
    """GRPO's examples of ``prompts`` seeded prompts x 2 completions, rewarded by ``reward`` and normalised within
    each group as an RL epoch does (not yet scored). Every two consecutive prompts hold as many completion tokens."""
    generator = torch.Generator().manual_seed(2)
    eos = [tokenizer.eos_token_id]
    group = [Rollout(tokenizer(t, add_special_tokens=False)["input_ids"] + eos, t, True) for t in POLICY_TEXTS]
    student_prompts = [
        torch.randint(3, len(tokenizer), (3 + i % 3,), generator=generator).tolist() for i in range(prompts)
    ]
    verdicts = [POLICY_VERDICTS[i % len(POLICY_VERDICTS)] for i in range(prompts)]
    return policy_examples(student_prompts, [group] * prompts, verdicts, make_reward(reward), RLConfig(reward=reward))


def grpo_steps(module, examples: list[PolicyExample], steps: int = 2) -> list[dict[str, float]]:
    """Score ``examples`` with the student (the old policy, as an RL epoch does), then ``steps`` optimizer steps of
    GRPO's loss on them with the module's optimizer; no EMA, as the module runs RL batches. Each step's loss and
    statistics."""
    pad = module.tokenizer.pad_token_id
    score_old_logprobs(module.student, examples, pad, TEMPERATURE, batch_size=2)
    batch = collate_policy(examples, pad, TEMPERATURE)
    optimizer = module.configure_optimizers()
    module.train()
    logs = []
    for _ in range(steps):
        loss, stats = module.policy_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        logs.append({"loss": loss.item()} | {key: value.item() for key, value in stats.items()})
    return logs


SCRIPTED_ENGINE = "helpers.ScriptedEngine"


class ScriptedEngine(RolloutEngine):
    """Answers each arithmetic prompt (``What is 37+48?``) without the model: sample k is right for even k and off by
    one for odd k, stating confidence 0.9 - 0.3 k. Every group then has a reward signal under ``rlvr`` and ``rlcr``
    from the first epoch, with no warm start (``data.rollout.engine: helpers.ScriptedEngine``)."""

    def generate_chunk(self, prompts, sampling, seed):
        return [
            [self._rollout(self._answer(prompt) + k % 2, 0.9 - 0.3 * k) for k in range(sampling.num_samples)]
            for prompt in prompts
        ]

    def _answer(self, prompt: list[int]) -> int:
        a, op, b = re.findall(r"What is (\d+)([+*-])(\d+)\?", self.tokenizer.decode(prompt))[-1]
        return {"+": operator.add, "-": operator.sub, "*": operator.mul}[op](int(a), int(b))

    def _rollout(self, answer: int, confidence: float) -> Rollout:
        text = f"Answer: {answer}\nConfidence: {confidence:.2f}"
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        return Rollout(ids, text, True)


POLICY_PROBE = "helpers.PolicyProbe"


class PolicyProbe(Callback):
    """GRPO's invariants inside a run, as JSONL rows of this rank (``log``): at each epoch's first batch, the largest
    |log ratio| of its tokens (fresh rollouts: 0, every ratio 1) and whether the start model, the KL reference, is
    held sharded; at the end, the reference's tensors that moved since training started (none may)."""

    def __init__(self, log: str) -> None:
        self.rows = Path(log)

    def on_train_start(self, trainer, module) -> None:
        self.start = _reference_tensors(module)

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if batch_idx:
            return
        student, mask = module.student, batch["student_mask"]
        temperature = float(batch_floats(batch, "temperature"))
        inputs = (student, batch["student_ids"], batch["student_attention"], mask, temperature)
        training = student.training
        student.eval()  # as score_old_logprobs
        with torch.no_grad(), trainer.precision_plugin.train_step_context():
            new = run_as_forward(student, completion_logprobs, *inputs)  # (N,)
        student.train(training)
        error = (new - batch_floats(batch, "old_logprobs")[mask]).abs().max().item()
        sharded = is_sharded(module.teacher) and all(isinstance(p, DTensor) for p in module.teacher.parameters())
        self._write(trainer, epoch=trainer.current_epoch, log_ratio=error, reference_sharded=sharded)

    def on_train_end(self, trainer, module) -> None:
        moved = [name for name, value in _reference_tensors(module).items() if not torch.equal(value, self.start[name])]
        self._write(trainer, reference_moved=moved)

    def _write(self, trainer, **row) -> None:
        with self.rows.open("a") as handle:
            handle.write(json.dumps({"rank": trainer.global_rank} | row) + "\n")


def _reference_tensors(module) -> dict[str, torch.Tensor]:
    """This rank's copy of the start model's tensors: the full-copy teacher's (its shards), or the teacher adapter."""
    if hasattr(module.teacher, "ema_pairs"):
        named = module.student.named_parameters()
        return {name: p.detach().clone() for name, p in named if ".teacher." in name}
    local = {name: t.to_local() if isinstance(t, DTensor) else t for name, t in module.teacher.state_dict().items()}
    return {name: tensor.detach().clone() for name, tensor in local.items()}


PROBE = "helpers.Probe"


class Probe(Callback):
    """Records the global random state at every training batch; optionally stops for good in the middle of an epoch.

    Args:
        log: JSONL file of ``{epoch, batch, step, rng}`` rows (``rng``: a hash of torch's global generator state).
        pause_epoch: the epoch in which to stop after batch ``pause_batch``: it writes ``marker`` and sleeps until
            killed. None never stops.
        pause_batch: see ``pause_epoch``.
        marker: the file written when the run stops.
    """

    def __init__(self, log: str, pause_epoch: int | None = None, pause_batch: int = 0, marker: str = "") -> None:
        self.rows, self.pause_epoch, self.pause_batch, self.marker = Path(log), pause_epoch, pause_batch, Path(marker)

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        state = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]
        row = {"epoch": trainer.current_epoch, "batch": batch_idx, "step": trainer.global_step, "rng": state}
        with self.rows.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.pause_epoch and batch_idx == self.pause_batch:
            self.marker.write_text(json.dumps({"epoch": trainer.current_epoch, "step": trainer.global_step}))
            time.sleep(600)  # killed long before


def resume_config(root: Path, **probe: object) -> Path:
    """The test suite's small quickstart (3 epochs of 2 optimizer steps) with a :class:`Probe`."""
    root.mkdir(parents=True, exist_ok=True)
    path = small_config(root, max_epochs=3)
    config = yaml.safe_load(path.read_text())
    init_args = {"log": str(root / "rng.jsonl"), **probe}
    config["trainer"]["callbacks"].append({"class_path": PROBE, "init_args": init_args})
    path.write_text(yaml.safe_dump(config))
    return path


def fit(config: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    """``python -m caopd_pl fit --config config`` in a fresh process, one thread, tests/ importable (Probe)."""
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = [sys.executable, "-m", "caopd_pl", "fit", "--config", str(config), *extra]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
    return process


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"fit ended ({process.returncode}) before {path.name}: {process.stdout.read()[-3000:]}"
            )
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.2)


def tensors(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint that training changes: weights (student, teacher) and optimizer states."""
    found = {f"state_dict/{key}": value for key, value in checkpoint["state_dict"].items()}
    for index, optimizer in enumerate(checkpoint["optimizer_states"]):
        for param, state in optimizer["state"].items():
            found |= {
                f"optimizer{index}/{param}/{key}": value for key, value in state.items() if torch.is_tensor(value)
            }
    return found


def assert_resumed_like(straight: Path, killed: Path) -> None:
    """The killed-and-resumed run's last checkpoint holds every tensor of the uninterrupted run's, bit for bit."""
    expected = tensors(torch.load(straight / "checkpoints/last.ckpt", weights_only=False))
    resumed_checkpoint = torch.load(killed / "checkpoints/last.ckpt", weights_only=False)
    resumed = tensors(resumed_checkpoint)
    assert resumed_checkpoint["epoch"] == 2 and resumed.keys() == expected.keys()
    assert any(key.startswith("state_dict/teacher.") for key in expected)
    different = [key for key in expected if not torch.equal(expected[key], resumed[key])]
    assert not different, f"{len(different)} of {len(expected)} tensors differ, e.g. {different[:3]}"


def redraw(model: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Every matrix ~ N(0, scale^2), seeded: a model whose greedy completions are long and prompt-dependent."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def user_module(tmp_path: Path, monkeypatch, name: str, source: str) -> None:
    """Write ``source`` as module ``name`` in a folder of the user's own on ``sys.path`` (not in the project); the
    module is forgotten when the test ends."""
    import textwrap

    folder = tmp_path / "user_code"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
