"""CaOPD from Python: the task, the data, the model and the trainer in code, no config file.

A tiny model and a small arithmetic task, so that it runs in about a minute on a CPU:

    .venv/bin/python examples/python_api.py --root runs/python_api

``docs/python_api.md`` explains each piece; every argument is the one the YAML key of the same name sets.
"""

from __future__ import annotations

import argparse

from caopd_pl.callbacks import InspectRollouts
from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.models.loading import ModelConfig
from caopd_pl.models.tiny import TinyModelConfig
from caopd_pl.module import CaOPDModule
from caopd_pl.pipeline import make_trainer
from caopd_pl.rollout import RolloutConfig
from caopd_pl.tasks.arithmetic import ArithmeticTask
from caopd_pl.warmstart import WarmStartConfig


def main(root: str, epochs: int = 2) -> dict[str, float]:
    """Warm-start, distil for ``epochs`` epochs and test; returns the test metrics (files under ``root``)."""
    task = ArithmeticTask(num_train=40, num_val=8, num_test=8)
    data = RolloutDataModule(
        task,
        rollout=RolloutConfig(engine="hf", num_samples=2, max_new_tokens=8),
        calibration="empirical",  # CaOPD; "none" is the SDFT baseline
        prompts_per_epoch=4,
        batch_size=4,
    )
    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    module = CaOPDModule(
        ModelConfig(name_or_path="tiny", tiny=tiny),
        warm_start=WarmStartConfig(steps=4, batch_size=8),
        eval_max_new_tokens=8,
        task=data.task,  # the CLI links these two from the datamodule; in code, hand them over
        shared_engine=data.shared_engine,
    )
    trainer = make_trainer(
        max_epochs=epochs,
        default_root_dir=root,
        accelerator="cpu",
        enable_progress_bar=False,
        callbacks=[InspectRollouts(prompts=2)],  # rollouts/epoch_E.jsonl and completions.csv beside metrics.csv
    )
    trainer.fit(module, datamodule=data)
    (metrics,) = trainer.test(module, datamodule=data, verbose=False)
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/python_api", help="where logs and test results go")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    results = main(args.root, args.epochs)
    print({key: round(value, 3) for key, value in results.items() if key.startswith("test/") and key.count("/") == 1})
