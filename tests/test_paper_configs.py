"""The paper's configs (``configs/paper/``) parse with the real CLI parser and hold the reference's settings.

Parsing uses ``--print_config``, which resolves and type-checks the whole config and exits before anything is
instantiated: no 8B model is loaded (the test fails if loading is attempted).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import caopd_pl.module
from caopd_pl.__main__ import main
from caopd_pl.continual.config import load_config
from caopd_pl.pipeline import config_args

pytestmark = pytest.mark.slow  # seconds each: the full suite runs them, the fast lane (-m "not slow") does not

ROOT = Path(__file__).resolve().parents[1]
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
CONTINUAL = sorted((ROOT / "configs" / "paper" / "continual").glob("*.yaml"))
MODELS = {"qwen3_8b": "Qwen/Qwen3-8B", "olmo3_7b": "allenai/Olmo-3-7B-Instruct"}


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


def test_every_model_and_task_has_a_config():
    assert {path.stem for path in PAPER} == {f"{m}_{t}" for m in MODELS for t in ("science", "tooluse")}
    assert CONTINUAL, "configs/paper/continual/ holds the continual setting"


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_holds_the_reference_settings(path, capsys):
    config = print_config(capsys, "--config", str(path))
    trainer, model, data = config["trainer"], config["model"], config["data"]
    assert config["seed_everything"] == 42
    assert model["model"]["name_or_path"] == MODELS[path.stem.rsplit("_", 1)[0]]
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
    task_name = path.stem.rsplit("_", 1)[1]
    assert data["task"]["class_path"].endswith({"science": "ScienceTask", "tooluse": "ToolUseTask"}[task_name])
    assert task["train"] == f"data/caopd/{task_name}/train" and task["test"] == f"data/caopd/{task_name}/test"


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_never_reads_the_shared_folder(path, capsys):
    values = list(_strings(print_config(capsys, "--config", str(path))))
    assert values and not [value for value in values if "shared" in value]


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
    fit_config = ROOT / config.fit_config
    assert fit_config.parent == ROOT / "configs" / "paper"
    for stage in config.stages:
        # As the continual runner does: the fit config with the stage's task, the global then the stage overrides.
        raw = yaml.safe_load(fit_config.read_text())
        raw["data"]["task"] = stage.task
        stage_config = tmp_path / f"{stage.name}.yaml"
        stage_config.write_text(yaml.safe_dump(raw))
        resolved = print_config(capsys, *config_args(stage_config, config.overrides, stage.overrides))
        assert resolved["data"]["task"]["class_path"] == stage.task["class_path"]
        assert resolved["model"]["scheduler"]["init_args"]["total_steps"] == resolved["trainer"]["max_epochs"]
