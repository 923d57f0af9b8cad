"""Callbacks the CLI adds to every run (logs on disk every epoch, one short summary at the end of ``fit``), and one
a config adds to inspect a run.

- :class:`RolloutStats` logs each epoch's rollout statistics (``rollout/p_acc``, ``rollout/accuracy``...) from the
  datamodule at the end of the epoch.
- :func:`warm_start_logger` logs the warm start's loss as it runs (``warmstart/loss``).
- :class:`RunSummary` flushes every logger at the start of each epoch and at the end of fit (CSVLogger otherwise
  writes ``metrics.csv`` every 100 steps, which a slow CaOPD epoch may never reach), and at the end of ``fit``
  prints where the checkpoints and logs are and the last validation metrics.
- :class:`InspectRollouts` (opt-in: ``trainer.callbacks``) writes every epoch's rollouts, as text, to
  ``rollouts/epoch_<E>.jsonl`` under the run's log folder, and a completions table to each logger: ``completions.csv``
  beside ``metrics.csv`` (CSVLogger), a text panel (TensorBoardLogger), a ``wandb.Table`` (WandbLogger).
- :func:`hide_version_number` drops the logger version (``v_num``) from the progress bar: the run's folder is in the
  summary, and a bare number beside the loss reads as a metric.
"""

from __future__ import annotations

import csv
import html
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from caopd_pl import comparison
from caopd_pl.files import write_jsonl
from caopd_pl.inspection import TABLE_COLUMNS, rollout_records

SUMMARY_METRICS = ("accuracy", "mean_confidence", "ece", "spr", "auroc", "format_adherence")
MARKDOWN_SPECIAL = frozenset("|*_`\\[]#")
"""Characters a markdown cell shows as entities, so that the text is not read as markup."""
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


class InspectRollouts(Callback):
    """Shows what each epoch's rollouts looked like: every rollout's prompt, completion, verdict, P_acc, revised
    completion and teacher prompt (:mod:`caopd_pl.inspection`).

    At the start of each training epoch (its rollouts are sampled just before) it writes the records to
    ``<log dir>/rollouts/epoch_<E>.jsonl`` and a completions table (:data:`caopd_pl.inspection.TABLE_COLUMNS`, one
    row per rollout, plus the optimizer ``step``) to each logger: rows appended to ``completions.csv`` in a
    CSVLogger's folder, a markdown table under the ``rollouts`` text tag of a TensorBoardLogger, a ``wandb.Table``
    named ``rollouts`` through a WandbLogger; other loggers get the JSONL only. With several ranks, rank 0 writes its
    own share of the prompts. Turn it on with
    ``--trainer.callbacks+=caopd_pl.callbacks.InspectRollouts --trainer.callbacks.prompts=4``.

    Args:
        prompts: prompts shown per epoch, with all K rollouts of each: the first of the epoch's prompts (a seeded
            random draw, so a sample); None shows every prompt.
    """

    def __init__(self, prompts: int | None = None) -> None:
        if prompts is not None and prompts < 1:
            raise ValueError(f"InspectRollouts prompts={prompts}: must be >= 1, or null for every prompt")
        self.prompts = prompts

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rollouts = getattr(trainer.datamodule, "last_epoch", None)
        trace = getattr(rollouts, "trace", None)
        log_dir = trainer.log_dir  # a collective under DDP (rank 0 broadcasts it): every rank asks
        if trace is None or trace.epoch != trainer.current_epoch or not trainer.is_global_zero:
            return  # nothing sampled this epoch (a resumed run closing a finished one)
        records = rollout_records(pl_module.tokenizer, trace, self.prompts)
        write_jsonl(Path(log_dir or trainer.default_root_dir) / "rollouts" / f"epoch_{trace.epoch}.jsonl", records)
        rows = [[record[column] for column in TABLE_COLUMNS] for record in records]
        for logger in trainer.loggers:
            log_completions(logger, rows, trainer.global_step)


def log_completions(logger: Logger, rows: list[list[Any]], step: int) -> None:
    """Give ``logger`` the completions table (``rows`` in :data:`caopd_pl.inspection.TABLE_COLUMNS` order) at
    ``step``, in its own kind of table; a logger of another kind gets nothing."""
    columns = ["step", *TABLE_COLUMNS]
    rows = [[step, *row] for row in rows]
    if isinstance(logger, CSVLogger):
        path = Path(logger.log_dir) / "completions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerows([columns, *rows] if new else rows)
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_text("rollouts", markdown_table(columns, rows), global_step=step)
    elif isinstance(logger, WandbLogger):
        logger.log_table(key="rollouts", columns=columns, data=rows, step=step)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A markdown table whose cells show their text as is (TensorBoard renders markdown and drops unknown tags)."""

    def cell(value: Any) -> str:
        text = html.escape("" if value is None else str(value), quote=False)
        text = "".join(f"&#{ord(char)};" if char in MARKDOWN_SPECIAL else char for char in text)
        return text.replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


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
            print(before_and_after(pl_module, log_dir) or "", end="")


def before_and_after(module: L.LightningModule, log_dir: str | None) -> str | None:
    """The starting model against the last validation (:mod:`caopd_pl.comparison`): the table, and its JSON and PNG
    written into ``log_dir``; None when the run has no such pair (``model.validate_start: false``, no validation)."""
    start = getattr(module, "start_evaluation", None)
    end = module.end_evaluation() if hasattr(module, "end_evaluation") else None
    if start is None or end is None:
        return None
    text = comparison.table(start, end) + "\n"
    if log_dir:
        written = comparison.write(start, end, log_dir)
        text += f"  wrote {', '.join(written)} to {log_dir}\n"
    return text


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
    """Leave the logger version (``v_num``) out of the trainer's progress bar, whichever bar it uses.

    Lightning's way is to override ``ProgressBar.get_metrics`` (its docstring shows this very override) in a
    subclass; the bar's class is the trainer's choice (TQDM or Rich, or one a config names), so the override is set on
    the instance instead of replacing the bar. ``tests/test_cli.py`` checks that the bar shows no ``v_num``.
    """
    bar = trainer.progress_bar_callback
    if not isinstance(bar, ProgressBar):
        return
    metrics_of = bar.get_metrics

    def get_metrics(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = metrics_of(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    bar.get_metrics = get_metrics  # an instance attribute: the bar's class (TQDM or Rich) is the trainer's choice
