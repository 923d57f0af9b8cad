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

The CLI wires all three into every Lightning command (:mod:`caopd_pl.cli`).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from caopd_pl.errors import UsageError
from caopd_pl.files import atomic_torch_save

LAST = "last"


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
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:4], "little")


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
