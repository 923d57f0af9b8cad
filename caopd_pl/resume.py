"""What lets a killed ``fit`` resume as if it had never stopped: whole checkpoints, and epochs that replay exactly.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file *beside* its target, fsyncs it and renames
  it over the target. Lightning's own writer goes through an fsspec transaction whose temporary file lives in the
  system's temporary folder; when that is another filesystem the commit falls back to a copy, and a copy cut short
  (a full disk, a kill) leaves a torn ``last.ckpt``. A rename within one folder is atomic: the target is the old
  checkpoint or the new one, never half of one.
- :class:`EpochSeed` reseeds the global random generators (torch, NumPy, ``random``) from (seed, epoch) at the start
  of every training epoch. Checkpoints do not hold the global random state, so without it whatever draws from it
  during an epoch (dropout) would draw differently after a resume than in the run that was never stopped.
  (Rollouts are seeded by (rollout.seed, epoch, rank) and the batch order by (data.seed, epoch) already.)
- :func:`check_last_checkpoint`: ``--ckpt_path last`` with no last checkpoint to find is an error, not (as in
  Lightning) a warning followed by training from scratch with exit status 0.
- :class:`SavedConfig` stores the run's resolved config in every checkpoint, and :func:`check_same_experiment`
  compares it with the config of a ``fit --ckpt_path`` at start-up: a resume that would change the experiment (the
  model, the loss, the data, the optimizer, the seeds) is refused in one line; what a resume may change
  (:data:`RESUME_MAY_CHANGE`: more epochs, another log folder, evaluation settings, memory knobs) is allowed.
  Lightning would otherwise replace the config's model settings with the checkpoint's without a word, and resume
  another task or calibration as if nothing changed.

The CLI wires them into every Lightning command (:mod:`caopd_pl.cli`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from caopd_pl.errors import UsageError
from caopd_pl.files import atomic_torch_save
from caopd_pl.losses import comparable_divergence, upgrade_loss_settings
from caopd_pl.seeds import derive_seed

LAST = "last"
CONFIG_KEY = "caopd_config"
"""The checkpoint's key holding the run's resolved config (:class:`SavedConfig`)."""
RESUME_MAY_CHANGE = (
    # how long to train
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.max_steps",
    "trainer.min_steps",
    "trainer.max_time",
    # where and what to log and save
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_checkpointing",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.profiler",
    "trainer.enable_autolog_hparams",
    "trainer.model_registry",
    # evaluation at the end of an epoch, which training never reads
    "trainer.check_val_every_n_epoch",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "trainer.limit_predict_batches",
    "trainer.num_sanity_val_steps",
    "trainer.inference_mode",
    "model.eval_max_new_tokens",
    "model.eval_temperature",
    "model.readout",
    "model.test_start",
    "data.eval_batch_size",
    "data.max_eval_prompts",
    "data.test_split",
    "data.predict_split",
    # memory and speed knobs that leave the numbers as they are
    "num_threads",
    "model.model.gradient_checkpointing",
    "data.rollout.gpu_memory_utilization",
    "data.rollout.enable_sleep_mode",
)
"""Config keys (and everything under them) a ``fit --ckpt_path`` may change; any other difference is refused."""
NOT_SETTINGS = ("config", "ckpt_path", "__path__")
"""Keys of a parsed config that say how it was given, not what it sets."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with the temporary file in the target's folder and an fsynced rename.

    Remote paths (``s3://``...) keep Lightning's writer: object stores replace objects whole anyway.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically; a failure leaves ``path`` as it was.

        Raises:
            TypeError: ``storage_options`` given (as Lightning's writer: it has no use for them).
        """
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, Path(path))  # temporary file beside the target, fsynced, renamed


class EpochSeed(Callback):
    """Seeds torch, NumPy and ``random`` from (seed, epoch) at the start of every training epoch.

    Args:
        seed: the run's seed (``seed_everything``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = epoch_seed(self.seed, trainer.current_epoch)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # every device's generator too


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for ``epoch`` of a run seeded with ``seed``, within NumPy's 32-bit range (a hash: no two pairs alike)."""
    return derive_seed(seed, epoch)


def check_last_checkpoint(ckpt_path: str | None, checkpoint_dirs: list[str]) -> None:
    """Fail when ``ckpt_path`` is ``last`` and none of ``checkpoint_dirs`` holds a last checkpoint.

    Lightning would warn and train from scratch with exit status 0: a resume that silently restarts (a mistyped
    ``default_root_dir``, a run killed before its first checkpoint) costs the whole run and looks like success.

    Raises:
        UsageError: no ``ModelCheckpoint`` folder to look in, or no ``last*.ckpt`` in any of them (the message names
            the folders, any other checkpoint found there, and the fix).
    """
    if ckpt_path != LAST:
        return
    if not checkpoint_dirs:
        raise UsageError(
            "--ckpt_path=last: the config has no ModelCheckpoint callback to find a last checkpoint with; add one "
            "with save_last: true (as configs/quickstart.yaml does), or give --ckpt_path FILE.ckpt"
        )
    folders = [Path(folder) for folder in checkpoint_dirs]
    if any(_last_checkpoints(folder) for folder in folders):
        return
    others = [path for folder in folders if folder.is_dir() for path in folder.glob("*.ckpt") if path.is_file()]
    others = [str(path) for path in sorted(others, key=lambda path: path.stat().st_mtime, reverse=True)]  # newest first
    found = f" (other checkpoints there: {', '.join(others[:3])}; give one as --ckpt_path)" if others else ""
    where = ", ".join(str(folder) for folder in folders)
    raise UsageError(
        f"--ckpt_path=last: no last checkpoint in {where}{found}; check trainer.default_root_dir, or leave out "
        "--ckpt_path to start a fresh run"
    )


def _last_checkpoints(folder: Path) -> list[Path]:
    # The names Lightning's ckpt_path="last" looks for: last.ckpt, and last-v1.ckpt... from the version counter.
    # is_file() follows a link (save_last: link): a link whose target is gone is no checkpoint to Lightning either.
    if not folder.is_dir():
        return []
    names = [path for path in folder.glob(f"{LAST}*.ckpt") if path.stem == LAST or path.stem.startswith(f"{LAST}-")]
    return [path for path in names if path.is_file()]


def last_checkpoint(checkpoint_dirs: list[str]) -> Path | None:
    """The checkpoint ``--ckpt_path last`` resumes from: the newest ``last*.ckpt`` of ``checkpoint_dirs`` (as
    Lightning picks it), or None."""
    found = [path for folder in checkpoint_dirs for path in _last_checkpoints(Path(folder))]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


class SavedConfig(Callback):
    """Stores the run's resolved config (as ``--print_config`` shows it) in every checkpoint, under ``CONFIG_KEY``.

    Args:
        config: the config as nested dicts of plain values.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config


def check_same_experiment(checkpoint: Mapping[str, Any], config: Mapping[str, Any], ckpt_path: str) -> None:
    """Refuse to resume ``checkpoint`` under a ``config`` that changes the experiment.

    The checkpoint's saved config (:class:`SavedConfig`) is compared key by key with ``config``; a checkpoint written
    before configs were saved has only its model's hyper-parameters to compare. A key only one side has (one added
    to the code since) is not compared, nor are the keys of :data:`RESUME_MAY_CHANGE`.

    Raises:
        UsageError: some setting differs (the message names up to three: the key, the checkpoint's value, the
            config's).
    """
    saved = checkpoint.get(CONFIG_KEY)
    if saved is None:  # an older checkpoint: its module's constructor arguments are all there is
        hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
        saved, config = {"model": hparams}, {"model": config.get("model", {})}
    changed = changed_settings(_comparable(saved), _comparable(config), RESUME_MAY_CHANGE)
    if not changed:
        return
    shown = "; ".join(f"{key} is {old!r} there, {new!r} here" for key, old, new in changed[:3])
    more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
    raise UsageError(
        f"--ckpt_path={ckpt_path!r} was trained with other settings: {shown}{more}; resume with the checkpoint's "
        "settings, or start a new run (another trainer.default_root_dir, no --ckpt_path); what a resume may change: "
        "docs/errors.md, Resuming"
    )


def _comparable(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` with ``model.loss`` in today's form and its divergence as the class and arguments it builds, so a
    checkpoint written before the divergence was an object, or another spelling of the same one, compares equal."""
    model = config.get("model")
    loss = model.get("loss") if isinstance(model, Mapping) else None
    if not isinstance(loss, Mapping):
        return config
    loss = upgrade_loss_settings(loss)
    if "divergence" in loss:
        loss["divergence"] = comparable_divergence(loss["divergence"])
    return {**config, "model": {**model, "loss": loss}}


def changed_settings(
    saved: Mapping[str, Any], current: Mapping[str, Any], may_change: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` for each setting both configs hold with different values.

    Nested mappings are compared key by key; a key only one side holds is passed over (a field added to the code
    since); keys under ``may_change`` (a key and everything under it) and :data:`NOT_SETTINGS` are left out.
    """
    skip = (*may_change, *NOT_SETTINGS)
    changes: list[tuple[str, Any, Any]] = []

    def walk(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> None:
        for key in sorted(old.keys() & new.keys(), key=str):
            name = f"{prefix}{key}"
            if any(name == s or name.startswith(f"{s}.") for s in skip):
                continue
            if isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
                walk(old[key], new[key], f"{name}.")
            elif old[key] != new[key]:
                changes.append((name, old[key], new[key]))

    walk(saved, current, "")
    return changes
