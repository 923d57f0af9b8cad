"""The compared methods by name: each override makes the same fit config train that method, with the same rollout
budget, and the benchmarks take the names."""

import argparse
import importlib.util
from pathlib import Path

import pytest
from helpers import small_config

from caopd_pl import pipeline
from caopd_pl.methods import METHODS, method_override

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "miscalibration.py"
_SPEC = importlib.util.spec_from_file_location("miscalibration", _PATH)
miscalibration = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(miscalibration)


def test_each_method_trains_what_its_name_says_with_the_same_rollout_budget(tmp_path):
    config = small_config(tmp_path)
    built = {name: pipeline.build(config, tmp_path / name, [method_override(name)]) for name in METHODS}
    data = {name: experiment.datamodule for name, experiment in built.items()}
    assert [data[name].calibration for name in ("sdft", "caopd")] == ["none", "empirical"]
    assert data["sdft"].rl is None and data["caopd"].rl is None
    assert data["rlvr"].rl.reward == "rlvr" and data["rlcr"].rl.reward == "rlcr"
    budgets = {
        (d.prompts_per_epoch, d.rollout.num_samples, d.rollout.seed, built[name].trainer.max_epochs)
        for name, d in data.items()
    }
    assert budgets == {(4, 2, 0, 2)}  # prompts x K per epoch, the rollouts' seed, epochs: one budget for all
    # Laid over an RL method, a distillation method's override turns RL off again (the benchmark's cached runs).
    back = pipeline.build(config, tmp_path / "back", [method_override("rlcr"), method_override("sdft")])
    assert back.datamodule.rl is None and back.datamodule.calibration == "none"


def test_an_unknown_method_fails_in_one_line():
    with pytest.raises(ValueError, match=r"^method 'base' is not one of \['sdft', 'caopd', 'rlvr', 'rlcr'\]"):
        method_override("base")


def test_the_benchmark_takes_every_method_by_name():
    parser = argparse.ArgumentParser()
    miscalibration.add_arguments(parser, "configs/quickstart.yaml")
    args = parser.parse_args(["--out", "x", "--methods", "base", "sdft", "caopd", "rlvr", "rlcr"])
    assert args.methods == ["base", "sdft", "caopd", "rlvr", "rlcr"]
    assert parser.parse_args(["--out", "x"]).methods == ["base", "sdft", "caopd"]  # the default, as before
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--methods", "ppo"])
