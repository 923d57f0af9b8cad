"""The experiment steps, written once: build a run from a fit config, warm-start it, distil, evaluate.

``python -m caopd_pl fit`` runs these steps through Lightning's CLI (the module warm-starts itself before the first
epoch with the same routine, :func:`caopd_pl.warmstart.warm_start_student`). Programs that chain several runs, the
continual runner (:mod:`caopd_pl.continual.runner`) and the miscalibration benchmark
(``benchmarks/miscalibration.py``), compose them instead::

    experiment = build("configs/quickstart.yaml", Path("runs/x"), overrides=[{"trainer": {"max_epochs": 2}}])
    warm_start(experiment, seed=0)
    distil(experiment)
    records = evaluate(experiment)  # one dict per answered prompt of data.test_split

Or without a config, in code (``examples/python_api.py``, ``docs/python_api.md``): build the datamodule and the
module (handing it the datamodule's task and engine, as the CLI links them) and a trainer from :func:`make_trainer`::

    data = RolloutDataModule(ArithmeticTask(num_train=200), rollout=RolloutConfig(engine="hf", num_samples=4))
    module = CaOPDModule(ModelConfig(), warm_start=WarmStartConfig(steps=50), task=data.task,
                         shared_engine=data.shared_engine)
    make_trainer(max_epochs=2, default_root_dir="runs/python_api").fit(module, datamodule=data)

Overrides are nested mappings laid over the config in order, exactly as further ``--config`` files would be
(jsonargparse merges them): a mapping merges into a mapping, anything else replaces what was there, later wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.loggers import CSVLogger

from caopd_pl.callbacks import RolloutStats, RunSummary
from caopd_pl.cli import TRAINER_DEFAULTS, cli_main, quiet_console
from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.module import CaOPDModule
from caopd_pl.tasks.base import TaskExample
from caopd_pl.warmstart import WarmStartConfig, warm_start_student


@dataclass
class Experiment:
    """A configured run: the module, its datamodule and its trainer, as the fit config and overrides made them."""

    module: CaOPDModule
    datamodule: RolloutDataModule
    trainer: L.Trainer


def build(
    config: str | Path,
    root: str | Path,
    overrides: Sequence[Mapping[str, Any]] = (),
    args: Sequence[str] = (),
) -> Experiment:
    """The module, datamodule and trainer of a fit config, writing under ``root``; nothing is trained yet.

    Args:
        config: a fit config (``configs/quickstart.yaml``).
        root: ``trainer.default_root_dir``: logs and anything else the run writes.
        overrides: nested mappings laid over the config in order (``{"trainer": {"max_epochs": 2}}``).
        args: command-line options applied last (``--model.ema_rate=0.002``).

    Raises:
        UsageError: a bad option, value or path (one line, as the CLI reports it).
    """
    layers = [{"trainer": {"default_root_dir": str(root)}}, *overrides]
    cli = cli_main([*config_args(config, *layers), *args], run=False)
    return Experiment(cli.model, cli.datamodule, cli.trainer)


def make_trainer(**options: Any) -> L.Trainer:
    """A Lightning ``Trainer`` set up for CaOPD as the CLI sets it up: rollouts regenerated every epoch, no
    distributed sampler, no sanity validation, the epoch's rollout statistics logged, a summary at the end of ``fit``,
    Lightning's tips silenced, and (unless ``logger`` is given) a CSV logger writing ``metrics.csv`` (and the
    checkpoints, Lightning's default place) under ``default_root_dir/logs/version_N``.

    Args:
        options: any ``lightning.Trainer`` argument (``max_epochs``, ``default_root_dir``, ``callbacks``, ...); they
            override the defaults above, and ``callbacks`` are added to the two.
    """
    quiet_console()
    root = options.get("default_root_dir") or "."
    options = {**TRAINER_DEFAULTS, "logger": CSVLogger(root, name="logs"), **options}
    options["callbacks"] = [RolloutStats(), RunSummary(), *options.get("callbacks", [])]
    return L.Trainer(**options)


def config_args(config: str | Path, *overrides: Mapping[str, Any]) -> list[str]:
    """Command-line arguments that load ``config`` and lay each override over it (a ``--config`` each)."""
    args = ["--config", str(config)]
    for override in overrides:
        if override:  # jsonargparse reads a --config value that is not a file as the config's text
            args += ["--config", yaml.safe_dump(dict(override), sort_keys=False)]
    return args


def starting_from(folder: str | Path) -> dict[str, Any]:
    """The override that starts a run from a saved student (:func:`save_student`'s folder), with no warm start."""
    return {"model": {"model": {"name_or_path": str(folder)}, "warm_start": None}}


def warm_start(
    experiment: Experiment,
    examples: list[TaskExample] | None = None,
    *,
    config: WarmStartConfig | None = None,
    seed: int | None = None,
) -> list[float]:
    """Supervised warm start of the experiment's student, in place; returns the loss of every step.

    Args:
        experiment: the run whose student (and tokenizer) is trained.
        examples: the demonstrations to learn; default the train split of the experiment's task.
        config: the warm start's settings; default ``model.warm_start`` (or its defaults when that is null).
        seed: the global torch seed set just before training (see :func:`~caopd_pl.warmstart.warm_start_student`).
    """
    module = experiment.module
    if examples is None:
        examples = experiment.datamodule.task.split("train")
    settings = config or module.warm_start or WarmStartConfig()
    return warm_start_student(module.student, module.tokenizer, examples, settings, seed=seed)


def distil(experiment: Experiment) -> None:
    """On-policy distillation for the configured budget (``trainer.fit``)."""
    experiment.trainer.fit(experiment.module, datamodule=experiment.datamodule)


def evaluate(experiment: Experiment) -> list[dict[str, Any]]:
    """Greedy answers on ``data.test_split`` (``trainer.test``); returns this process's records, in batch order."""
    collector = _TestRecords()
    experiment.trainer.callbacks.append(collector)
    try:
        experiment.trainer.test(experiment.module, datamodule=experiment.datamodule, verbose=False)
    finally:
        experiment.trainer.callbacks.remove(collector)
    return collector.records


def save_student(experiment: Experiment, folder: Path) -> None:
    """The student and its tokenizer as a Hugging Face folder (what ``model.model.name_or_path`` loads)."""
    experiment.module.student.save_pretrained(folder)
    experiment.module.tokenizer.save_pretrained(folder)


class _TestRecords(L.Callback):
    """Keeps the records each ``test_step`` returns."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_test_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any) -> None:
        self.records += outputs
