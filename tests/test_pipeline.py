"""The experiment steps (caopd_pl/pipeline.py): overrides lay over a config as the same command-line options would;
the warm start is the supervised fine-tune the runner and the benchmark each used to spell out; evaluate returns the
records the module reports."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers import REPO, metrics_rows, small_config

from caopd_pl import pipeline
from caopd_pl.cli import cli_main
from caopd_pl.files import read_jsonl
from caopd_pl.warmstart import supervised_finetune, warm_start_pairs


def _resolved(args: list[str]) -> dict:
    config = cli_main(args, run=False).config.as_dict()
    config.pop("config")  # the config files themselves: a path, or the text of an override layer
    return config


@pytest.mark.slow
def test_override_layers_resolve_as_the_equivalent_command_line_options(tmp_path):
    config = small_config(tmp_path)
    layers = [
        {"trainer": {"max_epochs": 3}, "model": {"warm_start": {"steps": 2}, "model": {"tiny": {"seed": 4}}}},
        {"model": {"warm_start": None}, "data": {"calibration": "none", "rollout": {"seed": 5}}, "seed_everything": 5},
    ]
    options = [
        "--trainer.max_epochs=3",
        "--model.warm_start.steps=2",
        "--model.model.tiny.seed=4",
        "--model.warm_start=null",
        "--data.calibration=none",
        "--data.rollout.seed=5",
        "--seed_everything=5",
    ]
    by_layers = _resolved(pipeline.config_args(config, *layers))
    assert by_layers == _resolved(["--config", str(config), *options])
    assert by_layers["model"]["model"]["tiny"]["hidden_size"] == 32  # a layer merges into the config, keeps the rest


@pytest.mark.slow
def test_later_layers_win_and_options_come_last(tmp_path):
    layers = [{"trainer": {"max_epochs": 3}, "model": {"warm_start": {"steps": 2}}}, {"trainer": {"max_epochs": 5}}]
    experiment = pipeline.build(small_config(tmp_path), tmp_path / "run", layers, ["--model.ema_rate=0.5"])
    assert experiment.trainer.max_epochs == 5
    assert experiment.module.ema_rate == 0.5
    assert (experiment.module.warm_start.steps, experiment.module.warm_start.batch_size) == (2, 8)
    assert experiment.trainer.default_root_dir == str(tmp_path / "run")


@pytest.mark.slow
def test_warm_start_is_the_supervised_finetune_of_the_task_demonstrations(tmp_path):
    config = small_config(tmp_path)
    ours, reference = (pipeline.build(config, tmp_path / name) for name in ("ours", "reference"))
    losses = pipeline.warm_start(ours, seed=3)

    # What the continual runner and the benchmark each spelled out before they shared the pipeline.
    module, settings = reference.module, reference.module.warm_start
    examples = reference.datamodule.task.split("train")
    pools = warm_start_pairs(module.tokenizer, examples, settings, settings.steps * settings.batch_size)
    torch.manual_seed(3)
    expected = supervised_finetune(module.student, pools, module.tokenizer.pad_token_id, settings)

    assert len(losses) == settings.steps and losses == expected
    for (name, got), want in zip(ours.module.student.state_dict().items(), module.student.state_dict().values()):
        assert torch.equal(got, want), name


@pytest.mark.slow
def test_distil_then_evaluate_returns_the_module_s_records(tmp_path):
    split = {"data": {"test_split": "ood"}}
    experiment = pipeline.build(small_config(tmp_path, max_epochs=1), tmp_path / "run", [split])
    pipeline.warm_start(experiment, seed=0)
    teacher = {key: value.clone() for key, value in experiment.module.teacher.state_dict().items()}
    pipeline.distil(experiment)
    moved = [
        key for key, value in experiment.module.teacher.state_dict().items() if not torch.equal(value, teacher[key])
    ]
    assert moved  # the EMA teacher followed the distilled student

    callbacks = list(experiment.trainer.callbacks)
    records = pipeline.evaluate(experiment)
    assert experiment.trainer.callbacks == callbacks  # the collector does not outlive the evaluation
    expected_ids = [example.id for example in experiment.datamodule.task.split("ood")[:8]]
    assert sorted(record["id"] for record in records) == sorted(expected_ids)
    assert records == read_jsonl(experiment.trainer.log_dir + "/test_predictions.jsonl")


@pytest.mark.slow
def test_the_python_api_example_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("python_api", REPO / "examples/python_api.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    metrics = example.main(str(tmp_path), epochs=2)
    assert {"test/accuracy", "test/ece", "test/mean_confidence"} <= set(metrics)
    log_dir = tmp_path / "logs/version_0"
    rows = metrics_rows(tmp_path)
    assert any(row.get("rollout/p_acc") for row in rows) and any(row.get("train/kl") for row in rows)
    assert [path.name for path in sorted((log_dir / "rollouts").iterdir())] == ["epoch_0.jsonl", "epoch_1.jsonl"]
    assert (log_dir / "completions.csv").exists() and (log_dir / "metrics.json").exists()
    assert len((log_dir / "test_predictions.jsonl").read_text().splitlines()) == 8
