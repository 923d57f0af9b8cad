"""Callbacks the CLI adds to every run: logs on disk every epoch and one short summary at the end of ``fit``.

- :class:`RolloutStats` logs each epoch's rollout statistics (``rollout/p_acc``, ``rollout/accuracy``...) from the
  datamodule at the end of the epoch.
- :func:`warm_start_logger` logs the warm start's loss as it runs (``warmstart/loss``).
- :class:`RunSummary` flushes every logger at the start of each epoch and at the end of fit (CSVLogger otherwise
  writes ``metrics.csv`` every 100 steps, which a slow CaOPD epoch may never reach), and at the end of ``fit``
  prints where the checkpoints and logs are and the last validation metrics.
- :func:`hide_version_number` drops the logger version (``v_num``) from the progress bar: the run's folder is in the
  summary, and a bare number beside the loss reads as a metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar

SUMMARY_METRICS = ("accuracy", "mean_confidence", "ece", "spr", "auroc", "format_adherence")
UNSTATED_WARNING = 0.5
"""Below this format adherence the summary says that the calibration metrics describe unstated (0) confidences."""


class RolloutStats(Callback):
    """Logs the statistics of the epoch's rollouts (``datamodule.last_epoch.stats``) as ``rollout/<name>``.

    Averaged over ranks (``sync_dist``): each rank sampled its own share of the prompts. A datamodule without
    ``last_epoch`` (or an epoch that sampled nothing, as a resumed run's re-entered epoch) logs nothing.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rollouts = getattr(trainer.datamodule, "last_epoch", None)
        if rollouts is not None:
            stats = {f"rollout/{key}": value for key, value in rollouts.stats.items()}
            pl_module.log_dict(stats, sync_dist=True)


class RunSummary(Callback):
    """Flushes logs every epoch and prints a summary when ``fit`` ends (on global rank zero)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()
        task = getattr(trainer.datamodule, "task", None)
        if trainer.is_global_zero and task is not None:  # what judges the rollouts, said once at the start
            kind = type(task.verifier)
            name = getattr(kind, "name", "") or kind.__name__
            print(f"task: {type(task).__name__}; verifier: {name} ({kind.__module__}.{kind.__qualname__})")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        flush_loggers(trainer)  # the previous epoch's training and validation rows

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        flush_loggers(trainer)
        log_dir = trainer.log_dir  # a collective under DDP (rank 0 broadcasts it): every rank asks
        if trainer.is_global_zero:
            print(fit_summary(trainer, log_dir, time.perf_counter() - self.started))


def warm_start_logger(trainer: L.Trainer, flush_every_s: float = 30.0) -> Callable[[int, float], None]:
    """A per-step hook for the warm start that puts its loss on disk as it runs.

    The loss goes to every logger as ``warmstart/loss`` (by warm-start step, every ``trainer.log_every_n_steps``),
    and the logs are written at the first step and then at least every ``flush_every_s`` seconds, so a slow warm
    start shows in ``metrics.csv`` from its first minute.

    Args:
        trainer: the trainer whose loggers receive the loss.
        flush_every_s: the longest time between two writes of the logs.

    Returns:
        ``log(step, loss)``, for :func:`caopd_pl.warmstart.supervised_finetune`'s ``on_step``.
    """
    every = max(1, trainer.log_every_n_steps)
    last_flush = time.monotonic()

    def log(step: int, loss: float) -> None:
        nonlocal last_flush
        if step % every:
            return
        for logger in trainer.loggers:
            logger.log_metrics({"warmstart/loss": loss}, step=step)
        if step == 0 or time.monotonic() - last_flush > flush_every_s:
            flush_loggers(trainer)
            last_flush = time.monotonic()

    return log


def flush_loggers(trainer: L.Trainer) -> None:
    """Write what every logger holds to disk."""
    for logger in trainer.loggers:
        logger.save()


def fit_summary(trainer: L.Trainer, log_dir: str | None, seconds: float) -> str:
    """Where the run's outputs are and its last validation metrics, a few lines."""
    lines = [f"fit done: {trainer.current_epoch} epochs, {trainer.global_step} optimizer steps, {seconds:.0f} s"]
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if checkpoint is not None and checkpoint.dirpath:
        last = Path(checkpoint.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        lines.append(f"  checkpoints: {checkpoint.dirpath}" + (f" (last: {last})" if last.exists() else ""))
    if log_dir:
        files = sorted(p.name for p in Path(log_dir).glob("*") if p.is_file())
        lines.append(f"  logs: {log_dir} ({', '.join(files)})")
    validation = _validation_metrics(trainer.callback_metrics)
    if validation:
        lines.append("  last validation: " + ", ".join(f"{k} {v:.3f}" for k, v in validation.items()))
        if validation.get("format_adherence", 1.0) < UNSTATED_WARNING:
            lines.append(
                f"  only {validation['format_adherence']:.0%} of the answers state a confidence; the others read 0, so "
                "ECE and the rest describe a model that mostly says nothing (see metrics.csv, val/format_adherence)"
            )
    return "\n".join(lines)


def _validation_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    # The headline metrics, in the README's order; the rest stay in metrics.csv.
    shown = [f"val/{name}" for name in SUMMARY_METRICS]
    return {key.removeprefix("val/"): float(metrics[key]) for key in shown if key in metrics}


def hide_version_number(trainer: L.Trainer) -> None:
    """Leave the logger version (``v_num``) out of the trainer's progress bar, whichever bar it uses."""
    bar = trainer.progress_bar_callback
    if not isinstance(bar, ProgressBar):
        return
    metrics_of = bar.get_metrics

    def get_metrics(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = metrics_of(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    bar.get_metrics = get_metrics  # an instance attribute: the bar's class (TQDM or Rich) is the trainer's choice
