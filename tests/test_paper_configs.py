"""The paper's configs (``configs/paper/``) parse with the real CLI parser and hold the reference's settings.

A paper setup is ``base.yaml``, a model layer (``model/``) and a task layer (``task/``), stacked as ``--config``
options, with its own ``trainer.default_root_dir``. Parsing uses ``--print_config``, which resolves and type-checks
the whole config and exits before anything is instantiated: no 8B model is loaded (the test fails if loading is
attempted).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import caopd_pl.module
from caopd_pl.__main__ import main
from caopd_pl.continual.config import load_config
from caopd_pl.continual.runner import stacked_configs
from caopd_pl.pipeline import config_args

pytestmark = pytest.mark.slow  # seconds each: the full suite runs them, the fast lane (-m "not slow") does not

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
CONTINUAL = sorted((PAPER / "continual").glob("*.yaml"))
MODELS = {"qwen3_8b": "Qwen/Qwen3-8B", "olmo3_7b": "allenai/Olmo-3-7B-Instruct"}
TASKS = {"science": "ScienceTask", "tooluse": "ToolUseTask"}
SETUPS = [(model, task) for model in MODELS for task in TASKS]
MODEL_KEYS = {"model.model.name_or_path"}
TASK_KEYS = {"data.task.class_path", "data.task.init_args.train", "data.task.init_args.test"}
ROOT_KEY = "trainer.default_root_dir"


def layers(model: str, task: str) -> list[Path]:
    """The config files of a paper setup, in the order they are stacked."""
    return [PAPER / "base.yaml", PAPER / "model" / f"{model}.yaml", PAPER / "task" / f"{task}.yaml"]


def setup_args(model: str, task: str) -> list[str]:
    """The options of a paper setup, as docs/paper_setting.md gives them: its layers, then its own folder."""
    configs = [arg for path in layers(model, task) for arg in ("--config", str(path))]
    return [*configs, "--trainer.default_root_dir", f"runs/paper/{model}_{task}"]


@pytest.fixture(autouse=True)
def _no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("parsing a paper config must not load a model")

    monkeypatch.setattr(caopd_pl.module, "load_model", refuse)


def print_config(capsys, *args: str) -> dict:
    """The resolved config that ``python -m caopd_pl fit ARGS --print_config`` prints."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def flat(node, prefix: str = "") -> dict:
    """``{"a.b.c": value}`` of a nested mapping (lists and empty mappings are values)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    children = (flat(child, f"{prefix}.{name}" if prefix else name) for name, child in node.items())
    return {key: value for child in children for key, value in child.items()}


def test_every_model_and_task_has_a_layer():
    assert {path.name for path in PAPER.glob("*.yaml")} == {"base.yaml"}
    assert {path.stem for path in (PAPER / "model").glob("*.yaml")} == set(MODELS)
    assert {path.stem for path in (PAPER / "task").glob("*.yaml")} == set(TASKS)
    assert CONTINUAL, "configs/paper/continual/ holds the continual setting"


def test_a_layer_sets_only_the_keys_of_its_model_or_task():
    for model in MODELS:
        assert set(flat(yaml.safe_load((PAPER / "model" / f"{model}.yaml").read_text()))) == MODEL_KEYS
    for task in TASKS:
        assert set(flat(yaml.safe_load((PAPER / "task" / f"{task}.yaml").read_text()))) == TASK_KEYS
    base = set(flat(yaml.safe_load((PAPER / "base.yaml").read_text())))
    assert not base & (MODEL_KEYS | TASK_KEYS)


def test_the_setups_differ_exactly_in_the_keys_of_their_model_and_task(capsys):
    resolved = {(model, task): flat(print_config(capsys, *setup_args(model, task))) for model, task in SETUPS}
    for (model, task), config in resolved.items():
        assert config[ROOT_KEY] == f"runs/paper/{model}_{task}"
        for (other_model, other_task), other in resolved.items():
            assert set(config) == set(other)
            differing = {key for key in config if config[key] != other[key]}
            expected = (MODEL_KEYS if model != other_model else set()) | (TASK_KEYS if task != other_task else set())
            assert differing == (expected | {ROOT_KEY} if expected else set()), (model, task, other_model, other_task)


@pytest.mark.parametrize(("model_name", "task_name"), SETUPS, ids=lambda name: name)
def test_paper_setup_holds_the_reference_settings(model_name, task_name, capsys):
    config = print_config(capsys, *setup_args(model_name, task_name))
    trainer, model, data = config["trainer"], config["model"], config["data"]
    assert config["seed_everything"] == 42
    assert model["model"]["name_or_path"] == MODELS[model_name]
    assert model["model"]["dtype"] == "bfloat16" and trainer["precision"] == "bf16-true"
    assert model["model"]["gradient_checkpointing"] is True
    assert model["loss"]["divergence"] == "reverse" and model["loss"]["skip_first_tokens"] == 3
    assert model["loss"]["average"] == "sequence"  # per completion, then over completions (issue 21, item 5)
    assert model["ema_rate"] == 0.01
    assert model["optimizer"]["init_args"]["lr"] == 2e-5
    schedule = model["scheduler"]["init_args"]
    assert model["scheduler"]["class_path"].endswith("OneCycleLR") and schedule["max_lr"] == 2e-5
    assert schedule["pct_start"] == 0.1 and schedule["anneal_strategy"] == "cos"
    assert schedule["total_steps"] == trainer["max_epochs"]  # one optimizer step per epoch
    assert trainer["gradient_clip_val"] == 1.0
    # 32 prompts per optimizer step, K = 8 each: one epoch of 32 prompts is 32 micro-batches of 8 completions.
    rollout = data["rollout"]
    assert rollout["num_samples"] == 8 and data["prompts_per_epoch"] == 32
    assert data["batch_size"] * trainer["accumulate_grad_batches"] == data["prompts_per_epoch"] * 8
    assert rollout["engine"] == "vllm" and rollout["gpu_memory_utilization"] == 0.3 and rollout["enable_sleep_mode"]
    assert rollout["max_new_tokens"] == 1024 and rollout["max_model_len"] == 2048
    assert model["eval_max_new_tokens"] == 1024 and model["eval_temperature"] == 0.0
    assert data["teacher"]["template"] == "demo" and data["calibration"] == "empirical"
    task = data["task"]["init_args"]
    assert data["task"]["class_path"].endswith(TASKS[task_name])
    assert task["train"] == f"data/caopd/{task_name}/train" and task["test"] == f"data/caopd/{task_name}/test"
    assert not [value for value in _strings(config) if "shared" in value]  # the user's folders, never ../shared


def test_the_continual_runners_stacking_resolves_as_stacked_config_options(capsys, tmp_path):
    # The continual runner lays a fit config's layers over each other itself (a YAML it then hands to the CLI).
    for model, task in SETUPS:
        merged = tmp_path / f"{model}_{task}.yaml"
        merged.write_text(yaml.safe_dump(stacked_configs(layers(model, task))))
        root = ["--trainer.default_root_dir", f"runs/paper/{model}_{task}"]
        assert print_config(capsys, "--config", str(merged), *root) == print_config(capsys, *setup_args(model, task))


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


@pytest.mark.parametrize("path", CONTINUAL, ids=lambda p: p.stem)
def test_continual_paper_config_loads_and_every_stage_parses(path, capsys, tmp_path):
    config = load_config(path)
    assert [stage.name for stage in config.stages] == ["science", "tooluse"]
    assert config.warm_start == "none" and config.calibrations == ["none", "empirical"]
    model = path.stem.removesuffix("_science_tooluse")
    assert [ROOT / name for name in config.fit_configs] == layers(model, "science")[:2]  # the base and its model
    for stage in config.stages:
        # As the continual runner does: the fit config with the stage's task, the global then the stage overrides.
        raw = stacked_configs([ROOT / name for name in config.fit_configs])
        raw["data"]["task"] = stage.task
        stage_config = tmp_path / f"{stage.name}.yaml"
        stage_config.write_text(yaml.safe_dump(raw))
        resolved = print_config(capsys, *config_args(stage_config, config.overrides, stage.overrides))
        assert resolved["model"]["model"]["name_or_path"] == MODELS[model]
        assert resolved["data"]["task"]["class_path"] == stage.task["class_path"]
        assert resolved["model"]["scheduler"]["init_args"]["total_steps"] == resolved["trainer"]["max_epochs"]
