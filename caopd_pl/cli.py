"""The Lightning entry point: ``python -m caopd_pl fit|validate|test|predict --config X.yaml``.

One :class:`LightningCLI` subclass fixes what CaOPD needs of the trainer (rollouts regenerated every epoch, no
distributed sampler on top of the per-rank prompt split) and saves the resolved config beside the checkpoints.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.module import CaOPDModule

TRAINER_DEFAULTS = {
    "reload_dataloaders_every_n_epochs": 1,
    "use_distributed_sampler": False,
    "num_sanity_val_steps": 0,
}


class CaOPDCLI(LightningCLI):
    """LightningCLI with CaOPD's trainer defaults."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({f"trainer.{key}": value for key, value in TRAINER_DEFAULTS.items()})


def cli_main(args: list[str] | None = None, run: bool = True) -> CaOPDCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (tests, benchmarks, continual runner)."""
    argv = sys.argv
    if args is not None:
        sys.argv = argv[:1]  # LightningCLI warns on every build when it sees both ``args`` and command-line arguments
    try:
        return CaOPDCLI(
            CaOPDModule,
            RolloutDataModule,
            args=args,
            run=run,
            save_config_kwargs={"overwrite": True},
        )
    finally:
        sys.argv = argv
