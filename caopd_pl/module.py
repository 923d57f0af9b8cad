"""CaOPDModule: the student, its EMA teacher, and the token-level distillation step.

Per batch of revised completions (built by :class:`caopd_pl.datamodule.RolloutDataModule`):
  student(plain prompt + completion) and teacher(privileged prompt + the same completion) give final hidden states;
  the divergence (reverse KL by default) between their next-token distributions over the full vocabulary is averaged
  over completion tokens, skipping the first ``loss.skip_first_tokens`` of each completion. It is computed in chunks
  from the hidden states (:mod:`caopd_pl.losses`), so the (B, T, V) logits never exist. After every optimizer step the
  teacher moves towards the student by ``ema_rate``.

Validation and test decode greedily from the plain prompt, verify, parse the stated confidence and report the
calibration metrics of :mod:`caopd_pl.metrics`; ``test`` also writes ``metrics.json`` and ``reliability.png``.

Run: ``python -m caopd_pl fit --config configs/quickstart.yaml``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from caopd_pl.confidence import parse_confidence
from caopd_pl.data import PromptBatch, skip_first
from caopd_pl.ema import ema_update, make_teacher
from caopd_pl.losses import Divergence, masked_mean_divergence
from caopd_pl.metrics import answer_tensors, calibration_metrics, calibration_summary, without_nan
from caopd_pl.models.loading import ModelConfig, final_hidden_states, load_model
from caopd_pl.plots import reliability_diagram
from caopd_pl.rollout.hf import generate
from caopd_pl.warmstart import WarmStartConfig, supervised_finetune, warm_start_pairs


@dataclass(frozen=True)
class LossConfig:
    """The distillation divergence."""

    divergence: Divergence = "reverse"
    """``reverse`` KL(student || teacher) (default), ``forward`` KL(teacher || student), or ``jsd``."""
    beta: float = 0.5
    """Teacher weight of the ``jsd`` mixture, in (0, 1)."""
    skip_first_tokens: int = 3
    """Completion tokens at the start of each completion left out of the loss (the reference skips 3)."""
    chunk_size: int = 64
    """Completion tokens per chunk of the vocabulary projection; bounds peak memory."""

    def __post_init__(self) -> None:
        if self.divergence not in ("reverse", "forward", "jsd"):
            raise ValueError(f"loss.divergence must be 'reverse', 'forward' or 'jsd', got {self.divergence!r}")
        if self.divergence == "jsd" and not 0 < self.beta < 1:
            raise ValueError(f"loss.beta must be in (0, 1) for jsd, got {self.beta}")
        if self.skip_first_tokens < 0 or self.chunk_size < 1:
            raise ValueError(f"loss.skip_first_tokens must be >= 0 and loss.chunk_size >= 1, got {self}")


class CaOPDModule(L.LightningModule):
    """Calibration-aware on-policy distillation (and, with ``data.calibration: none``, SDFT/OPD).

    Args:
        model: the student (the teacher starts as its copy).
        loss: the distillation divergence.
        ema_rate: teacher <- (1 - ema_rate) * teacher + ema_rate * student after every optimizer step.
        optimizer: optimizer of the student's parameters.
        scheduler: optional learning-rate scheduler, stepped every optimizer step.
        warm_start: supervised fine-tuning before the first epoch (the embedded default needs it); None skips it.
        eval_max_new_tokens: longest completion at validation, test and predict time.
    """

    def __init__(
        self,
        model: ModelConfig = ModelConfig(),
        loss: LossConfig = LossConfig(),
        ema_rate: float = 0.01,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        warm_start: WarmStartConfig | None = None,
        eval_max_new_tokens: int = 64,
    ) -> None:
        super().__init__()
        if not 0.0 <= ema_rate <= 1.0:
            raise ValueError(f"model.ema_rate must be in [0, 1], got {ema_rate}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.loss_config, self.ema_rate, self.warm_start = loss, ema_rate, warm_start
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.eval_max_new_tokens = eval_max_new_tokens
        self.student, self.tokenizer = load_model(model)
        self.teacher = make_teacher(self.student)
        self.warm_started = warm_start is None
        self.val_metrics = calibration_metrics("val/")
        self.test_metrics = calibration_metrics("test/")

    # ---- training ------------------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        if not self.warm_started:
            self._run_warm_start()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, tokens = self.distillation_loss(batch)
        size = batch["student_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/kl", loss.detach(), on_step=False, on_epoch=True, batch_size=size)
        self.log("train/tokens", tokens.float(), on_step=False, on_epoch=True, reduce_fx="sum", batch_size=size)
        return loss

    def distillation_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean token divergence of a batch and the number of counted tokens."""
        student_hidden = final_hidden_states(self.student, batch["student_ids"], batch["student_attention"])
        with torch.no_grad():
            teacher_hidden = final_hidden_states(self.teacher, batch["teacher_ids"], batch["teacher_attention"])
        skip = self.loss_config.skip_first_tokens
        return masked_mean_divergence(
            student_hidden,  # (B, Ts, H)
            self.student.get_output_embeddings().weight,  # (V, H)
            teacher_hidden,  # (B, Tt, H)
            self.teacher.get_output_embeddings().weight,  # (V, H)
            skip_first(batch["student_mask"], skip),
            skip_first(batch["teacher_mask"], skip),
            kind=self.loss_config.divergence,
            beta=self.loss_config.beta,
            chunk_size=self.loss_config.chunk_size,
        )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        ema_update(self.teacher, self.student, self.ema_rate)

    def on_train_epoch_end(self) -> None:
        rollouts = getattr(self.trainer.datamodule, "last_epoch", None)
        if rollouts is not None:
            stats = {f"rollout/{key}": value for key, value in rollouts.stats.items()}
            self.log_dict(stats, sync_dist=True)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.student.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _run_warm_start(self) -> None:
        datamodule = self.trainer.datamodule
        pools = warm_start_pairs(
            self.tokenizer,
            datamodule.task.split("train"),
            self.warm_start,
            count=self.warm_start.steps * self.warm_start.batch_size,
        )
        losses = supervised_finetune(
            self.student, pools, self.tokenizer.pad_token_id, self.warm_start, self.trainer.is_global_zero
        )
        _broadcast_parameters(self.student)
        self.teacher.load_state_dict(self.student.state_dict())
        self.warm_started = True
        if losses and self.trainer.is_global_zero:
            print(f"warm start: {len(losses)} steps, final loss {losses[-1]:.4f}")

    # ---- evaluation ----------------------------------------------------------------------------------------------

    def answer(self, batch: PromptBatch) -> list[dict[str, Any]]:
        """Greedy completions of a prompt batch, verified, with their stated confidence."""
        groups = generate(self.student, self.tokenizer, batch.prompt_ids, max_new_tokens=self.eval_max_new_tokens)
        texts = [group[0].text for group in groups]
        verifier = self.trainer.datamodule.task.verifier
        verdicts = verifier.verify_batch(texts, [example.reference for example in batch.examples])
        records = []
        for example, text, verdict in zip(batch.examples, texts, verdicts):
            stated = parse_confidence(text)
            records.append(
                dict(
                    id=example.id,
                    completion=text,
                    correct=verdict.correct,
                    detail=verdict.detail,
                    confidence=stated.value,
                    parsed=stated.parsed,
                    **example.meta,
                )
            )
        return records

    def validation_step(self, batch: PromptBatch, batch_idx: int) -> None:
        self._update(self.val_metrics, self.answer(batch))

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute())
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self.test_records: list[dict[str, Any]] = []

    def test_step(self, batch: PromptBatch, batch_idx: int) -> None:
        records = self.answer(batch)
        self.test_records += records
        self._update(self.test_metrics, records)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
        records = _gather_records(self.test_records)
        if self.trainer.is_global_zero:
            self._write_test_results(records)

    def on_predict_epoch_start(self) -> None:
        self.predict_records: list[dict[str, Any]] = []

    def predict_step(self, batch: PromptBatch, batch_idx: int) -> list[dict[str, Any]]:
        records = self.answer(batch)
        self.predict_records += records
        return records

    def on_predict_epoch_end(self) -> None:
        records = _gather_records(self.predict_records)
        if self.trainer.is_global_zero:
            path = self._output_dir() / "predictions.jsonl"
            _write_jsonl(path, records)
            print(f"wrote {len(records)} predictions to {path}")

    def _update(self, metrics, records: list[dict[str, Any]]) -> None:
        metrics.update(*answer_tensors(records))

    def _write_test_results(self, records: list[dict[str, Any]]) -> None:
        out = self._output_dir()
        confidence, correct, parsed = answer_tensors(records)
        summary = calibration_summary(confidence, correct, parsed)
        (out / "metrics.json").write_text(json.dumps(without_nan(summary), indent=2) + "\n")
        _write_jsonl(out / "test_predictions.jsonl", records)
        title = f"ECE {summary['ece']:.3f}, accuracy {summary['accuracy']:.3f}"
        reliability_diagram(confidence, correct, out / "reliability.png", title=title)
        print(f"wrote {out / 'metrics.json'} and {out / 'reliability.png'}")

    def _output_dir(self) -> Path:
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["caopd"] = {"warm_started": self.warm_started}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.warm_started = checkpoint.get("caopd", {}).get("warm_started", True)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)


def _gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return records
    gathered: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, records)
    return [record for part in gathered for record in part]


def _broadcast_parameters(module: torch.nn.Module) -> None:
    # Every rank warm-starts with the same seed; broadcasting from rank 0 removes any nondeterministic drift.
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)
