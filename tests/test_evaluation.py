"""Evaluation: decoding settings, and predict -> verify -> report through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from caopd_pl.__main__ import main
from caopd_pl.cli import cli_main
from caopd_pl.data import collate_prompts
from caopd_pl.files import write_jsonl
from caopd_pl.models.loading import ModelConfig
from caopd_pl.models.tiny import TinyModelConfig
from caopd_pl.module import CaOPDModule
from caopd_pl.rollout.base import RolloutConfig
from caopd_pl.rollout.shared import SharedEngine
from caopd_pl.tasks.arithmetic import ArithmeticTask
from caopd_pl.templates import prompt_ids

REPO = Path(__file__).resolve().parents[1]
TINY = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


def evaluation_config(root: Path) -> Path:
    """The quickstart config on a small tiny model, eight test prompts, writing under ``root``."""
    config = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    config["trainer"] |= {"default_root_dir": str(root), "enable_progress_bar": False}
    config["trainer"].pop("logger", None)  # the CLI's default logger writes under default_root_dir
    config["model"]["model"]["tiny"] = {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "num_kv_heads": 1,
        "intermediate_size": 64,
    }
    config["model"]["eval_max_new_tokens"] = 12
    config["data"]["task"]["init_args"] |= {"num_train": 40, "num_val": 8, "num_test": 8}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_evaluation_sampling_is_the_rollouts_with_evaluations_length_and_temperature():
    module = CaOPDModule(ModelConfig(tiny=TINY), eval_max_new_tokens=512)
    rollout = RolloutConfig(engine="vllm", num_samples=8, temperature=0.7, top_p=0.9, max_model_len=4096, seed=3)
    settings = module.evaluator.sampling(rollout)
    assert (settings.num_samples, settings.temperature, settings.top_p, settings.max_new_tokens) == (1, 0.0, 1.0, 512)
    assert (settings.engine, settings.max_model_len, settings.seed) == ("vllm", 4096, 3)  # the same engine
    assert CaOPDModule(ModelConfig(tiny=TINY), eval_temperature=0.6).evaluator.sampling(rollout).temperature == 0.6


@pytest.mark.parametrize("key, value", [("eval_temperature", -0.1), ("eval_max_new_tokens", 0)])
def test_bad_evaluation_setting_names_the_key(key, value):
    with pytest.raises(ValueError, match=f"model.{key}"):
        CaOPDModule(ModelConfig(tiny=TINY), **{key: value})


def test_records_with_numpy_references_are_written_as_plain_json(tmp_path):
    # test and predict write their records through caopd_pl.files.write_jsonl
    import numpy as np

    path = tmp_path / "records.jsonl"
    write_jsonl(path, [{"id": "a", "reference": np.int64(3), "options": np.array(["A", "B"]), "tags": {"x"}}])
    assert read_jsonl(path) == [{"id": "a", "reference": 3, "options": ["A", "B"], "tags": ["x"]}]
    with pytest.raises(TypeError, match="object"):
        write_jsonl(path, [{"reference": object()}])


def test_the_module_answers_with_the_task_and_engine_it_was_given_no_trainer_needed():
    task = ArithmeticTask(levels=["1+1"], ood_levels=[], num_train=4, num_val=2, num_test=3)
    shared = SharedEngine(RolloutConfig(num_samples=4, temperature=0.7, max_new_tokens=2))
    module = CaOPDModule(ModelConfig(tiny=TINY), eval_max_new_tokens=6, task=task, shared_engine=shared)
    examples = task.split("test")
    batch = collate_prompts([(prompt_ids(module.tokenizer, e.student_messages()), e) for e in examples])
    records = module.evaluator.answer(batch)

    assert type(shared.engine).__name__ == "HFEngine"  # created on first use, from data.rollout's engine
    assert [(r["id"], r["reference"]) for r in records] == [(e.id, e.reference) for e in examples]
    verdicts = task.verifier.verify_batch([r["completion"] for r in records], [e.reference for e in examples])
    assert [(r["correct"], r["detail"]) for r in records] == [(v.correct, v.detail) for v in verdicts]
    lengths = [len(module.tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in records]
    assert max(lengths) > 2 and max(lengths) <= 6  # evaluation's length, not the rollouts'


def test_a_module_built_without_task_or_engine_says_what_evaluation_needs():
    task = ArithmeticTask(levels=["1+1"], ood_levels=[], num_train=4, num_val=2, num_test=2)
    module = CaOPDModule(ModelConfig(tiny=TINY))
    batch = collate_prompts([(prompt_ids(module.tokenizer, e.student_messages()), e) for e in task.split("test")])
    with pytest.raises(RuntimeError, match="shared_engine=data.shared_engine"):
        module.evaluator.answer(batch)
    module.shared_engine = SharedEngine(RolloutConfig())
    module.shared_engine.bind(module.student, module.tokenizer)
    with pytest.raises(RuntimeError, match="no task .* task=data.task"):
        module.evaluator.answer(batch)


def test_evaluation_needs_no_lightning_and_the_module_no_datamodule():
    # Evaluation is a plain component the module's hooks call; the module trains on what the CLI hands it.
    code = (
        "import sys, caopd_pl.evaluation; print('lightning' in sys.modules); import caopd_pl.module; "
        "print('caopd_pl.datamodule' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_predict_then_verify_then_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = evaluation_config(run)
    assert main(["predict", "--config", str(config)]) == 0
    assert main(["test", "--config", str(config)]) == 0
    (predictions,) = run.rglob("predictions.jsonl")
    (tested,) = run.rglob("test_predictions.jsonl")
    (test_metrics,) = run.rglob("metrics.json")
    records = read_jsonl(predictions)
    assert records == read_jsonl(tested)  # predict_split and test_split are both 'test', decoded alike

    task = cli_main(["--config", str(config), "--trainer.logger", "false"], run=False).datamodule.task
    references = {example.id: example.reference for example in task.split("test")}
    assert len(records) == 8 and {r["id"]: r["reference"] for r in records} == references

    for name in ("predictions", "test_predictions"):
        judged = tmp_path / f"{name}.judged.jsonl"
        source = predictions if name == "predictions" else tested
        assert main(["verify", "--verifier", "exact", "--input", str(source), "--output", str(judged), "--quiet"]) == 0
        rejudged = read_jsonl(judged)
        assert [(r["id"], r["correct"], r["detail"]) for r in rejudged] == [
            (r["id"], r["correct"], r["detail"]) for r in records
        ]
        assert main(["report", "--input", str(judged), "--out", str(tmp_path / name)]) == 0
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics.pop("malformed_lines") == 0
        # report also tallies verify's verdict statuses; the exact verifier neither times out nor fails
        assert (metrics.pop("timeouts"), metrics.pop("verifier_errors")) == (0, 0)
        tested_metrics = json.loads(test_metrics.read_text())
        # report reads the stated value: test's greedy readout, its primary by default
        assert tested_metrics.pop("readout") == "greedy" and tested_metrics.pop("by_readout")["greedy"] == metrics
        assert metrics == tested_metrics  # report reproduces test's own metrics
        assert metrics["n"] == 8
        assert metrics["accuracy"] == sum(r["correct"] for r in records) / 8
        assert metrics["format_adherence"] == sum(r["parsed"] for r in records) / 8
