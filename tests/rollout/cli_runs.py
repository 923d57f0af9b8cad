"""Runs through the real CLI shared by the engine tests (imported as ``cli_runs``: pytest puts tests/rollout on
``sys.path``): a shrunk quickstart config, and ``test`` on a local checkpoint with a probe of what it decoded."""

from __future__ import annotations

from pathlib import Path

import yaml
from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[2]


def small_quickstart(root: Path, engine: str) -> Path:
    """configs/quickstart.yaml with ``engine``, shrunk to two short epochs and pointed at ``root``."""
    config = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    config["trainer"] |= {"max_epochs": 2, "default_root_dir": str(root), "enable_progress_bar": False}
    config["model"]["model"]["tiny"] = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1}
    config["model"]["warm_start"] |= {"steps": 4, "batch_size": 8}
    config["model"]["eval_max_new_tokens"] = 8
    config["data"]["task"]["init_args"] |= {"num_train": 40, "num_val": 8, "num_test": 8}
    config["data"]["rollout"] |= {"engine": engine, "num_samples": 2, "max_new_tokens": 8}
    config["data"] |= {"prompts_per_epoch": 4, "batch_size": 4, "max_eval_prompts": 8}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def checkpoint_config(root: Path, checkpoint: Path, engine: str) -> Path:
    """:func:`small_quickstart` on a local checkpoint, no warm start, one epoch, greedy evaluation of 24 tokens."""
    config = yaml.safe_load(small_quickstart(root, engine).read_text())
    config["trainer"] |= {"max_epochs": 1, "num_sanity_val_steps": 0}
    config["model"] |= {"model": {"name_or_path": str(checkpoint)}, "warm_start": None, "eval_max_new_tokens": 24}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class TestRun(Callback):
    """What a ``test`` run decoded with: the engine of its test batches, and their records."""

    __test__ = False  # a callback, not a test class

    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self.engine = trainer.datamodule.engine
        self.records += outputs


def run_test(root: Path, checkpoint: Path, engine: str, ckpt_path: Path | None = None) -> TestRun:
    """``test`` through the CLI (:func:`checkpoint_config` under ``root``), from ``ckpt_path`` when given."""
    from caopd_pl.cli import cli_main

    root.mkdir(parents=True, exist_ok=True)
    cli = cli_main(["--config", str(checkpoint_config(root, checkpoint, engine))], run=False)
    probe = TestRun()
    cli.trainer.callbacks.append(probe)
    ckpt = None if ckpt_path is None else str(ckpt_path)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)
    assert cli.datamodule.engine is None  # closed at the end of test
    return probe
