"""CaOPDModule: the student, its EMA teacher, and the token-level distillation step.

Per batch of revised completions (built by :class:`caopd_pl.datamodule.RolloutDataModule`):
  student(plain prompt + completion) and teacher(privileged prompt + the same completion) give final hidden states;
  the divergence (reverse KL by default) between their next-token distributions over the full vocabulary is averaged
  over completion tokens, skipping the first ``loss.skip_first_tokens`` of each completion. It is computed in chunks
  from the hidden states (:mod:`caopd_pl.losses`), so the (B, T, V) logits never exist. After every optimizer step the
  teacher moves towards the student by ``ema_rate``.

RL baselines (``data.rl`` set: RLVR, RLCR): the datamodule serves policy batches instead (:mod:`caopd_pl.grpo`: the
sampled completions with their group-relative advantages and the sampler's log-probabilities), and the step minimises
GRPO's clipped objective (``model.policy_loss``), with an optional KL penalty to the start model: the teacher, which
RL batches never EMA-update (``ema_rate`` is not read). Everything else, the warm start and evaluation included, is
shared by all methods.

Validation, test and predict answer the plain prompts, read the model's confidence in each answer and, for test and
predict, write the results, all through :class:`caopd_pl.evaluation.Evaluator` (built from the module's student,
task verifier, shared engine, ``readout`` and ``eval_*`` settings); the hooks here log the calibration metrics of
:mod:`caopd_pl.metrics` for each readout (``test/ece`` for the primary readout, ``test/<readout>/ece`` for all).
``test`` of a checkpoint then answers the same prompts with the run's starting weights, which ``fit`` kept beside
the checkpoints (:mod:`caopd_pl.start_weights`), and compares the two as ``fit`` does (``model.test_start``).
With several ranks (DDP, FSDP2) every rank answers every prompt: the CLI turns the distributed sampler off (each rank
samples its own training prompts), and FSDP's forwards all-gather, so ranks must run the same ones. Rank 0's records
are therefore the whole split and it alone writes them.

The module gets the task (warm-start rows, verifier) and the shared engine as constructor arguments, which the CLI
links from the instantiated datamodule (``data.task`` -> ``task``, ``data.shared_engine`` -> ``shared_engine``); it
never reads them through the trainer. Built without them (unit tests, export) it trains on given batches, and says
what is missing when something needs them.

Run: ``python -m caopd_pl fit --config configs/quickstart.yaml``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from caopd_pl import comparison, start_weights
from caopd_pl.callbacks import warm_start_logger
from caopd_pl.data import PromptBatch, skip_first
from caopd_pl.ema import ema_update, make_teacher, reset_teacher
from caopd_pl.errors import UsageError
from caopd_pl.evaluation import Evaluator, write_predictions, write_test_results
from caopd_pl.grpo import PolicyLossConfig, grpo_loss, is_policy_batch
from caopd_pl.losses import LossConfig, masked_mean_divergence
from caopd_pl.metrics import answer_tensors, calibration_metrics
from caopd_pl.models.loading import DTYPES, Dtype, ModelConfig, final_hidden_states, load_model
from caopd_pl.models.lora import AdapterTeacher, LoraSettings, add_adapters, keep_adapters_float32
from caopd_pl.readouts import ReadoutConfig, with_readout
from caopd_pl.rollout.shared import SharedEngine
from caopd_pl.sharding import data_parallel_mesh, gathered, is_sharded, run_as_forward, shard_model
from caopd_pl.tasks.base import Task
from caopd_pl.tasks.checks import check_warm_start_data
from caopd_pl.warmstart import WarmStartConfig, warm_start_student

_T = TypeVar("_T")


class CaOPDModule(L.LightningModule):
    """Calibration-aware on-policy distillation (with ``data.calibration: none``, SDFT/OPD; with ``data.rl``, GRPO).

    Args:
        model: the student (the teacher starts as its copy).
        loss: the distillation divergence (an object, built once from ``model.loss.divergence``) and its averaging.
        policy_loss: GRPO's objective, used on the RL methods' batches (``data.rl`` set); unread otherwise.
        ema_rate: teacher <- (1 - ema_rate) * teacher + ema_rate * student after every optimizer step.
        optimizer: optimizer of the student's parameters.
        scheduler: optional learning-rate scheduler, stepped every optimizer step.
        warm_start: supervised fine-tuning before the first epoch (the embedded default needs it); None skips it.
        eval_max_new_tokens: longest completion at validation, test and predict time.
        eval_temperature: sampling temperature at validation, test and predict time; 0 (default) decodes greedily,
            as the paper evaluates. Only the length and temperature differ from ``data.rollout``'s sampling (one
            completion per prompt, top-p 1, the same engine and stop ids).
        teacher_dtype: dtype the EMA teacher is held in; None (default) keeps the student's. A bf16/fp16 teacher
            is updated with stochastic rounding, which keeps the EMA unbiased at the cost of zero-mean noise of a
            few bf16 steps per weight, where round-to-nearest loses most updates (docs/method.md). ``float32`` is
            exact and costs 2 more bytes per parameter than bf16, which the paper's 8B run on one GPU cannot spare
            (docs/paper_setting.md), hence the default. Under ``bf16-mixed`` (fp32 student) ``bfloat16`` halves the
            teacher's memory at no cost in its forward, whose matmuls autocast runs in bf16 anyway. Lightning's
            ``bf16-true``/``16-true`` precision casts the whole module, teacher included: a ``teacher_dtype`` set
            here is restored at fit start (so a ``bf16-true`` resume restarts an fp32 teacher from bf16 values).
        readout: how evaluation reads the confidence of each answer (:mod:`caopd_pl.readouts`): the primary readout
            (``greedy`` by default, as the paper evaluates) and those reported beside it (``expected`` by default).
        lora: train LoRA adapters (peft) instead of all weights; the teacher is then an EMA of the student's
            adapter over the same frozen base (:mod:`caopd_pl.models.lora`). None (default): full fine-tuning.
        task: the task: the warm start's rows and evaluation's verifier (the CLI links ``data.task``); None where
            neither runs.
        shared_engine: the run's rollout engine, shared with the datamodule's rollouts (the CLI links
            ``data.shared_engine``); the student and tokenizer are bound to it here. None where nothing decodes.
        validate_start: evaluate the starting model (after the warm start) on the validation prompts before the first
            epoch; ``fit`` ends by comparing it with the last validation (:mod:`caopd_pl.comparison`).
        test_start: ``fit`` keeps the starting model's trainable weights in ``start.safetensors`` beside the
            checkpoints (:mod:`caopd_pl.start_weights`; not under FSDP2 sharding), and ``test`` evaluates them too
            on the test prompts and compares them with the checkpoint (``before_after.*`` beside the test's
            results). false: neither. Read from the command, never from a checkpoint (not saved in its settings).
    """

    def __init__(
        self,
        model: ModelConfig = ModelConfig(),
        loss: LossConfig = LossConfig(),
        policy_loss: PolicyLossConfig = PolicyLossConfig(),
        ema_rate: float = 0.01,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        warm_start: WarmStartConfig | None = None,
        eval_max_new_tokens: int = 64,
        eval_temperature: float = 0.0,
        teacher_dtype: Dtype | None = None,
        readout: ReadoutConfig = ReadoutConfig(),
        lora: LoraSettings | None = None,
        task: Task | None = None,
        shared_engine: SharedEngine | None = None,
        validate_start: bool = True,
        test_start: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= ema_rate <= 1.0:
            raise ValueError(f"model.ema_rate must be in [0, 1], got {ema_rate}")
        # The task and the engine are the run's objects, not settings: a checkpoint loads without them. test_start is
        # left out so that a test's own value is used: evaluation takes a checkpoint's saved settings over the command.
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "task", "shared_engine", "test_start"])
        self.loss_config, self.ema_rate, self.warm_start = loss, ema_rate, warm_start
        self.policy_loss_config = policy_loss
        self.trains_policy = False  # set by an RL batch: the teacher is then GRPO's fixed reference, never EMA-updated
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if eval_max_new_tokens < 1 or eval_temperature < 0:
            raise ValueError(
                f"model.eval_max_new_tokens must be >= 1 and model.eval_temperature >= 0, got {eval_max_new_tokens} "
                f"and {eval_temperature}"
            )
        self.eval_max_new_tokens, self.eval_temperature = eval_max_new_tokens, eval_temperature
        self.readout = readout
        if teacher_dtype is not None and teacher_dtype not in DTYPES:
            raise ValueError(f"model.teacher_dtype={teacher_dtype!r}: use one of {sorted(DTYPES)} or null")
        self.teacher_dtype = None if teacher_dtype is None else DTYPES[teacher_dtype]
        self.student, self.tokenizer = load_model(model)
        self.lora = lora
        self.teacher = self._make_teacher()
        self.task, self.shared_engine = task, shared_engine
        if shared_engine is not None:
            shared_engine.bind(self.student, self.tokenizer)
        self.ema_generator: torch.Generator | None = None  # stochastic rounding of a low-precision teacher
        self._ema_generator_state: torch.Tensor | None = None  # from a checkpoint, applied once the device is known
        self._checkpoint_adapters: dict[str, torch.Tensor] | None = None  # a resumed LoRA run's, for the optimizer
        self.warm_started = warm_start is None
        self.validate_start = validate_start
        self.start_evaluation: dict[str, Any] | None = None  # comparison.snapshot of the starting model
        self.test_start = test_start
        self.start_file: dict[str, str] | None = None  # start_weights.save's record of the kept starting weights
        self.val_records: list[dict[str, Any]] = []  # the latest validation's answers
        # Every readout's metrics: val/expected/ece, ...; the primary's are logged unsuffixed too (val/ece).
        self.val_readout_metrics = torch.nn.ModuleDict(
            {name: calibration_metrics(f"val/{name}/") for name in readout.readouts}
        )
        self.test_readout_metrics = torch.nn.ModuleDict(
            {name: calibration_metrics(f"test/{name}/") for name in readout.readouts}
        )

    def _make_teacher(self) -> torch.nn.Module:
        """A full copy of the student, or with LoRA the teacher adapter over the student's own base."""
        if self.lora is None:
            return make_teacher(self.student, self.teacher_dtype)
        if self.teacher_dtype is not None:
            raise ValueError("model.teacher_dtype is for a full-copy teacher; with model.lora set it to null")
        return AdapterTeacher(add_adapters(self.student, self.lora))

    # ---- training ------------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Check, before anything trains, that the task's train rows hold demonstrations for the warm start.

        Raises:
            UsageError: no train row has a demonstration (the message names ``model.warm_start`` and the fix).
        """
        if stage == "fit" and self.warm_start is not None:
            check_warm_start_data(self._task())

    def on_fit_start(self) -> None:
        if self.teacher_dtype is not None:
            self.teacher.to(dtype=self.teacher_dtype)  # a bf16-true/16-true precision plugin cast it with the rest
        # from_pretrained returns eval mode: without this the student trains with dropout off and gradient
        # checkpointing inactive (both read ``module.training``). Lightning 2.6 never sets modes at fit start; it
        # captures them before each validation and restores them after, so this mode is kept from here on.
        self.train()
        _ignore_teacher_eval_mode_warning()
        if not self.warm_started:
            self._run_warm_start()
        if self.test_start:
            self._keep_start()
        if self.validate_start and self.start_evaluation is None:  # a resumed run kept its own
            self._evaluate_start()

    def on_train_epoch_start(self) -> None:
        # This epoch's rollouts ran just before (train_dataloader); an engine that leaves the student in eval mode
        # must not turn dropout and gradient checkpointing off for the epoch.
        self.train()

    def train(self, mode: bool = True) -> CaOPDModule:
        """Set the student's mode; the teacher stays in eval mode whatever ``mode`` is (a deterministic target)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if is_policy_batch(batch):
            return self._policy_step(batch)
        loss, tokens = self.distillation_loss(batch)
        size = batch["student_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/kl", loss.detach(), on_step=False, on_epoch=True, batch_size=size)
        self.log("train/tokens", tokens.float(), on_step=False, on_epoch=True, reduce_fx="sum", batch_size=size)
        return loss

    def distillation_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean token divergence of a batch (float32 whatever the models' dtype) and the number of counted tokens.

        Sharded (FSDP2), each model's part runs as a forward of that model, so FSDP gathers the output embeddings
        the chunked loss reads and reduce-scatters the student's gradient (:mod:`caopd_pl.sharding`).
        """
        with torch.no_grad():
            ids, attention = batch["teacher_ids"], batch["teacher_attention"]
            teacher_hidden = run_as_forward(self.teacher, final_hidden_states, self.teacher, ids, attention)
        with gathered(self.teacher):
            return run_as_forward(self.student, self._divergence, batch, teacher_hidden)

    def _divergence(
        self, batch: dict[str, torch.Tensor], teacher_hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        student_hidden = final_hidden_states(self.student, batch["student_ids"], batch["student_attention"])
        skip = self.loss_config.skip_first_tokens
        return masked_mean_divergence(
            student_hidden,  # (B, Ts, H)
            self.student.get_output_embeddings().weight,  # (V, H)
            teacher_hidden,  # (B, Tt, H)
            self.teacher.get_output_embeddings().weight,  # (V, H)
            skip_first(batch["student_mask"], skip),
            skip_first(batch["teacher_mask"], skip),
            divergence=self.loss_config.divergence,
            chunk_size=self.loss_config.chunk_size,
            temperature=self.loss_config.temperature,
            average=self.loss_config.average,
        )

    def _policy_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.trains_policy = True
        loss, stats = self.policy_loss(batch)
        size = batch["student_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/policy_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=size)
        self.log("train/clip_fraction", stats["clip_fraction"], on_step=False, on_epoch=True, batch_size=size)
        if "kl" in stats:
            self.log("train/kl", stats["kl"], on_step=False, on_epoch=True, batch_size=size)
        tokens = stats["tokens"].float()
        self.log("train/tokens", tokens, on_step=False, on_epoch=True, reduce_fx="sum", batch_size=size)
        return loss

    def policy_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """GRPO's loss of a policy batch (:func:`caopd_pl.grpo.grpo_loss`) and its statistics.

        The start model (the teacher) runs only for a KL penalty; sharded (FSDP2), as in :meth:`distillation_loss`.
        """
        reference_hidden = None
        if self.policy_loss_config.kl_coef > 0:
            with torch.no_grad():
                ids, attention = batch["student_ids"], batch["student_attention"]
                reference_hidden = run_as_forward(self.teacher, final_hidden_states, self.teacher, ids, attention)
        with gathered(self.teacher) if reference_hidden is not None else contextlib.nullcontext():
            return run_as_forward(self.student, self._policy_objective, batch, reference_hidden)

    def _policy_objective(
        self, batch: dict[str, torch.Tensor], reference_hidden: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden = final_hidden_states(self.student, batch["student_ids"], batch["student_attention"])  # (B, T, H)
        reference_weight = None if reference_hidden is None else self.teacher.get_output_embeddings().weight
        weight = self.student.get_output_embeddings().weight  # (V, H)
        return grpo_loss(hidden, weight, batch, self.policy_loss_config, reference_hidden, reference_weight)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if not self.trains_policy:  # GRPO's reference is the start model
            ema_update(self.teacher, self.student, self.ema_rate, self._ema_generator())

    def _ema_generator(self) -> torch.Generator:
        # Same seed on every rank: the DDP ranks' teachers must round alike and stay identical. Created at the first
        # update, on the teacher's device (a checkpoint is restored before the module moves to its device).
        if self.ema_generator is None:
            self.ema_generator = torch.Generator(next(self.student.parameters()).device).manual_seed(0)
            if self._ema_generator_state is not None:
                with contextlib.suppress(RuntimeError):  # a state of another device type: start from the seed
                    self.ema_generator.set_state(self._ema_generator_state)
        return self.ema_generator

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy``, shard the student and the teacher with FSDP2; otherwise nothing."""
        if self.device_mesh is not None:
            if getattr(self, "lora", None) is not None:
                raise UsageError("model.lora with ModelParallelStrategy (FSDP2) is not supported: drop one of them")
            mesh = data_parallel_mesh(self.device_mesh)
            shard_model(self.student, mesh)
            shard_model(self.teacher, mesh)

    def configure_optimizers(self):
        if self.lora is not None:  # after Lightning's precision cast, before the optimizer sees the adapters
            keep_adapters_float32(self.student, self._checkpoint_adapters)
            self._checkpoint_adapters = None
        # Only what trains: with LoRA the frozen base would otherwise sit in the optimizer's parameter groups.
        optimizer = self.optimizer_factory([p for p in self.student.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _run_warm_start(self) -> None:
        losses = warm_start_student(
            self.student,
            self.tokenizer,
            self._task().split("train"),
            self.warm_start,
            show_progress=self.trainer.is_global_zero,
            on_step=warm_start_logger(self.trainer),  # metrics.csv shows the warm start as it runs
        )
        # Strategies that restore a checkpoint after on_fit_start (FSDP2 ModelParallelStrategy) need no gradient left
        # behind: loading the optimizer state initialises it by a step on zero gradients (torch.distributed.checkpoint).
        self.student.zero_grad(set_to_none=True)
        _broadcast_parameters(self.student)
        reset_teacher(self.teacher, self.student)
        self.warm_started = True
        if losses and self.trainer.is_global_zero:
            print(f"warm start: {len(losses)} steps, final loss {losses[-1]:.4f}")

    # ---- evaluation ----------------------------------------------------------------------------------------------

    @property
    def evaluator(self) -> Evaluator:
        """Evaluation of the current student with the module's task, engine and evaluation settings.

        Built on each use (it holds references only), so a task or engine given after construction is seen.
        """
        verifier = None if self.task is None else self.task.verifier
        return Evaluator(
            self.student,
            self.tokenizer,
            self.readout,
            self.eval_max_new_tokens,
            self.eval_temperature,
            verifier=verifier,
            engine=self.shared_engine,
        )

    def _evaluate_start(self) -> None:
        """The starting model on the validation prompts, read as validation reads them; logged as ``start/*``.

        Skipped where the run validates nothing (no ``val`` split, or ``trainer.limit_val_batches: 0``): there would be
        no end to compare with.
        """
        datamodule = self.trainer.datamodule
        task = getattr(datamodule, "task", None)
        if task is None or "val" not in task.splits() or not task.split("val") or not self.trainer.limit_val_batches:
            return
        self.start_evaluation = comparison.snapshot(self._answer_all(datamodule.val_dataloader()), self.readout)
        self._log_start(self.start_evaluation)

    def _answer_all(self, batches: Iterable[PromptBatch]) -> list[dict[str, Any]]:
        """The current student's answer records to every batch, in eval mode (the module's mode is restored)."""
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                evaluator = self.evaluator
                return [record for index, batch in enumerate(batches) for record in evaluator.answer(batch, index)]
        finally:
            self.train(training)

    def _log_start(self, snapshot: dict[str, Any]) -> None:
        """The starting model's primary-readout metrics, as ``start/*`` to every logger."""
        metrics = snapshot["metrics"][self.readout.primary]
        start = {f"start/{k}": v for k, v in metrics.items() if v is not None}
        for logger in self.trainer.loggers:
            logger.log_metrics(start, step=0)

    def _keep_start(self) -> None:
        """Keep the starting weights in every checkpoint folder (:mod:`caopd_pl.start_weights`), for ``test``.

        A fresh run writes the student's; a resume carries the file of the checkpoint it resumes into folders that
        lack it, and never writes the student, which holds trained weights by now (a checkpoint from before the file
        keeps none). Rank 0 alone writes: its checkpoints are the ones saved.
        """
        folders = sorted({Path(c.dirpath) for c in self.trainer.checkpoint_callbacks if getattr(c, "dirpath", None)})
        if not folders or not self.trainer.is_global_zero:
            return
        resumed_from = self.trainer.ckpt_path
        if resumed_from is not None:
            if self.start_file is not None:
                start_weights.carry(self.start_file, Path(resumed_from), folders)
        elif is_sharded(self.student):
            print("model.test_start: the starting weights are not kept under FSDP2 sharding; test will say so")
        else:
            self.start_file = start_weights.save(self.student, folders)

    def _task(self) -> Task:
        return _given(self.task, "no task (its warm start needs one): build it with task=data.task")

    def on_validation_epoch_start(self) -> None:
        self.val_records = []

    def validation_step(self, batch: PromptBatch, batch_idx: int) -> None:
        records = self.evaluator.answer(batch, batch_idx)
        self.val_records += records
        self._update("val", records)

    def end_evaluation(self) -> dict[str, Any] | None:
        """:func:`comparison.snapshot` of the latest validation; None before one ran."""
        if not self.val_records:
            return None
        return comparison.snapshot(self.val_records, self.readout)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_start(self) -> None:
        self.test_records: list[dict[str, Any]] = []
        self.test_batches: list[PromptBatch] = []  # the start answers the very same prompts (model.test_start)

    def test_step(self, batch: PromptBatch, batch_idx: int) -> list[dict[str, Any]]:
        records = self.evaluator.answer(batch, batch_idx)
        self.test_records += records
        if self.test_start and self.trainer.ckpt_path:  # only a checkpoint's start answers them again
            self.test_batches.append(batch)
        self._update("test", records)
        return records  # callbacks see them as ``outputs`` of on_test_batch_end

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        out = self._output_dir()  # on every rank: trainer.log_dir is a collective (a broadcast) under DDP
        if self.trainer.is_global_zero:  # rank 0's records are the whole split (module docstring)
            write_test_results(self.test_records, self.readout, out)
        if self.test_start and self.trainer.ckpt_path:  # without a checkpoint the module tested is its own start
            self._compare_with_start(Path(self.trainer.ckpt_path), out)

    def _compare_with_start(self, checkpoint: Path, out: Path) -> None:
        """The checkpoint's starting weights on the same test prompts: ``start/*`` logged, the before/after table
        printed and written into ``out`` (:mod:`caopd_pl.comparison`); one line instead where there is no start."""
        weights, why = start_weights.load(checkpoint, self.start_file, self.student)
        if weights is None:
            if self.trainer.is_global_zero:
                print(why)
            return
        end = comparison.snapshot(self.test_records, self.readout)
        with start_weights.swapped_in(self.student, weights):
            start = comparison.snapshot(self._answer_all(self.test_batches), self.readout)
        self._log_start(start)
        if self.trainer.is_global_zero:
            written = comparison.write(start, end, out)
            print(comparison.table(start, end, "test") + f"\n  wrote {', '.join(written)} to {out}")

    def on_predict_epoch_start(self) -> None:
        self.predict_records: list[dict[str, Any]] = []

    def predict_step(self, batch: PromptBatch, batch_idx: int) -> list[dict[str, Any]]:
        records = self.evaluator.answer(batch, batch_idx)
        self.predict_records += records
        return records

    def on_predict_epoch_end(self) -> None:
        records = self.predict_records
        out = self._output_dir()  # on every rank: trainer.log_dir is a collective (a broadcast) under DDP
        if self.trainer.is_global_zero:  # rank 0's records are the whole split (module docstring)
            write_predictions(records, out)

    def _update(self, stage: str, records: list[dict[str, Any]]) -> None:
        for name, metrics in getattr(self, f"{stage}_readout_metrics").items():
            metrics.update(*answer_tensors(with_readout(records, name)))

    def _log_metrics(self, stage: str) -> None:
        for name, metrics in getattr(self, f"{stage}_readout_metrics").items():
            values = metrics.compute()
            self.log_dict(values)
            if name == self.readout.primary:  # also as val/ece, test/ece: the run's headline figures
                self.log_dict({key.replace(f"{stage}/{name}/", f"{stage}/", 1): value for key, value in values.items()})
            metrics.reset()

    def _output_dir(self) -> Path:
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["caopd"] = {
            "warm_started": self.warm_started,
            "start_evaluation": self.start_evaluation,
            "start_file": self.start_file,
        }
        if self.ema_generator is not None:
            checkpoint["caopd"]["ema_generator"] = self.ema_generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("caopd", {})
        self.warm_started = state.get("warm_started", True)
        self.start_evaluation = state.get("start_evaluation")
        self.start_file = state.get("start_file")
        self._ema_generator_state, self.ema_generator = state.get("ema_generator"), None
        if self.lora is not None:  # restored before a bf16-true cast rounds them: configure_optimizers restores them
            prefix, weights = "student.", checkpoint["state_dict"].items()
            self._checkpoint_adapters = {
                k.removeprefix(prefix): v for k, v in weights if k.startswith(prefix) and "lora_" in k
            }


def _given(value: _T | None, missing: str) -> _T:
    """``value``; None raises a RuntimeError saying what the module lacks and how to give it (the CLI links it)."""
    if value is None:
        raise RuntimeError(f"CaOPDModule has {missing}, as the CLI does")
    return value


def _ignore_teacher_eval_mode_warning() -> None:
    """Silence Lightning's "Found N module(s) in eval mode at the start of training": they are the teacher's.

    :meth:`CaOPDModule.train` puts every other module in train mode, at fit start (before Lightning's check) and at
    every epoch start, and keeps the teacher in eval mode on purpose; Lightning offers no way to exempt a module
    from the check. The filter matches the warning's category and text, which the pinned Lightning keeps
    (tests/test_library_versions.py); ``tests/models/test_training_modes.py`` checks the modes and the silence.
    """
    message = r"Found \d+ module\(s\) in eval mode at the start of training"
    warnings.filterwarnings("ignore", message=message, category=PossibleUserWarning)


def _broadcast_parameters(module: torch.nn.Module) -> None:
    # Every rank warm-starts with the same seed; broadcasting from rank 0 removes any nondeterministic drift. Sharded,
    # each rank holds other shards (kept consistent by the reduce-scatter): nothing to broadcast.
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and not is_sharded(module):
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)
