"""benchmarks/real_model.py's task choice: --task / --task-config / --ood-config become the config's reasoning-gym
task, whole (another generator's settings never mix with the config's), and the ood split defaults to the task's
reasoning-gym curriculum one level up."""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from caopd_pl import pipeline

_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(_BENCHMARKS))  # real_model imports miscalibration, as `python benchmarks/real_model.py` does
_SPEC = importlib.util.spec_from_file_location("real_model", _BENCHMARKS / "real_model.py")
real_model = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(real_model)
TINY = {"model": {"model": {"name_or_path": "tiny"}}}  # the task is what is checked: no real model needed


def _layers(*argv: str) -> list[dict]:
    parser = argparse.ArgumentParser()
    for flag in ("--task", "--task-config", "--ood-config"):
        parser.add_argument(flag)
    return real_model.task_layer(parser.parse_args(argv))


def _task(layers: list[dict], tmp_path):
    return pipeline.build(real_model.CONFIG, tmp_path, [*layers, TINY]).datamodule.task


def test_no_flags_keep_the_configs_task(tmp_path):
    assert _layers() == []
    task = _task([], tmp_path)
    assert task.dataset == "chain_sum" and task.ood_config["min_terms"] == 3


def test_another_generator_replaces_the_configs_settings_and_gets_a_harder_ood_split(tmp_path):
    words = '{"min_word_len": 3, "max_word_len": 5}'
    task = _task(_layers("--task", "spell_backward", "--task-config", words), tmp_path)
    assert task.dataset == "spell_backward"
    assert task.config == {"min_word_len": 3, "max_word_len": 5}  # none of chain_sum's min_terms/max_digits
    assert task.ood_config == {"min_word_len": 7, "max_word_len": 7}  # the curriculum's next level, both ends
    assert task.splits() == ("train", "val", "test", "ood")


def test_an_explicit_ood_config_wins(tmp_path):
    task = _task(_layers("--task", "letter_counting", "--ood-config", '{"min_words": 8, "max_words": 10}'), tmp_path)
    assert task.dataset == "letter_counting" and task.config == {}
    assert task.ood_config == {"min_words": 8, "max_words": 10}


def test_bad_task_settings_stop_in_one_line():
    with pytest.raises(SystemExit, match="--task-config '\\[1\\]': expected a JSON object, got list; give a JSON"):
        _layers("--task", "chain_sum", "--task-config", "[1]")
    with pytest.raises(SystemExit, match="--ood-config '{': not valid JSON"):
        _layers("--ood-config", "{")
