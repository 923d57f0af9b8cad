"""The miscalibration benchmark's bookkeeping: per-seed aggregation, the per-level breakdown, its runs' folders and
its evaluation cache."""

import importlib.util
import math
from pathlib import Path

import pytest
from helpers import small_config

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "miscalibration.py"
_SPEC = importlib.util.spec_from_file_location("miscalibration", _PATH)
miscalibration = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(miscalibration)


def _cell(**values):
    return {key: values.get(key, 0.5) for key in miscalibration.KEYS}


def test_aggregate_means_stds_and_undefined_values():
    per_seed = [
        {"caopd": {"test": _cell(ece=0.1, spr=0.4), "ood": _cell(spr=math.nan)}},
        {"caopd": {"test": _cell(ece=0.3, spr=0.6), "ood": _cell(spr=math.nan)}},
    ]
    summary = miscalibration.aggregate(per_seed)
    test = summary["caopd"]["test"]
    assert test["ece"] == pytest.approx(0.2) and test["ece_std"] == pytest.approx(0.1)
    assert test["spr_seeds"] == [0.4, 0.6]
    # SPR is undefined when a split has no correct (or no wrong) answer: reported as None, never as NaN.
    assert summary["caopd"]["ood"]["spr"] is None and summary["caopd"]["ood"]["spr_seeds"] == [None, None]


def test_aggregate_keeps_every_readout_beside_the_primary():
    def seed(ece_expected):
        by_readout = {"greedy": _cell(ece=0.4), "expected": _cell(ece=ece_expected)}
        return {"caopd": {split: {**_cell(ece=ece_expected), "by_readout": by_readout} for split in ("test", "ood")}}

    summary = miscalibration.aggregate([seed(0.1), seed(0.2)])
    cell = summary["caopd"]["test"]
    assert cell["ece"] == pytest.approx(0.15)  # the primary readout, where it always was
    assert cell["by_readout"]["expected"]["ece"] == pytest.approx(0.15)
    assert cell["by_readout"]["greedy"]["ece"] == pytest.approx(0.4) and cell["by_readout"]["greedy"]["ece_std"] == 0
    assert "| caopd | test | greedy | 0.500 ± 0.000 | 0.400 ± 0.000 |" in miscalibration.readout_markdown(summary, 2)


def test_summarize_reads_each_readout_and_makes_one_primary():
    records = [
        {
            "correct": True,
            "parsed": True,
            "confidence": 1.0,
            "readouts": {"greedy": 1.0, "expected": 0.8, "sampled": 0.6},
        },
        {
            "correct": False,
            "parsed": True,
            "confidence": 1.0,
            "readouts": {"greedy": 1.0, "expected": 0.2, "sampled": 0.4},
        },
    ]
    summary = miscalibration.summarize(records, "expected")
    assert summary["mean_confidence"] == pytest.approx(0.5) and summary["ece"] == pytest.approx(0.2)
    assert summary["by_readout"]["greedy"]["ece"] == pytest.approx(0.5)
    assert summary["by_readout"]["sampled"]["mean_confidence"] == pytest.approx(0.5)
    assert miscalibration.by_level(records, "sampled")["all"]["mean_confidence"] == pytest.approx(0.5)


def test_by_level_groups_accuracy_and_stated_confidence():
    records = [
        {"level": "2+2", "correct": True, "confidence": 0.9},
        {"level": "2+2", "correct": False, "confidence": 0.7},
        {"level": "2*1", "correct": False, "confidence": 0.0},
    ]
    levels = miscalibration.by_level(records)
    assert levels == {
        "2*1": {"n": 1, "accuracy": 0.0, "mean_confidence": 0.0},
        "2+2": {"n": 2, "accuracy": 0.5, "mean_confidence": pytest.approx(0.8)},
    }
    table = miscalibration.level_markdown({"caopd": {"test": levels}}, "test")
    assert "| 2+2 | 0.50 / 0.80 |" in table.splitlines()


def test_build_writes_under_its_root_for_a_config_that_names_no_logger(tmp_path):
    # configs/quickstart.yaml names no logger: the benchmark must not depend on one (it used to set its save_dir).
    experiment = miscalibration.build(str(small_config(tmp_path)), tmp_path / "run", [], [])
    assert Path(experiment.trainer.log_dir).is_relative_to(tmp_path / "run")
    assert not experiment.trainer.checkpoint_callbacks  # the benchmark saves the models it needs itself


def test_evaluation_is_written_once_and_read_back(tmp_path, monkeypatch):
    config = str(small_config(tmp_path))
    records = miscalibration.evaluate(config, tmp_path, Path("tiny"), "base", "ood", samples=2)
    assert len(records) == 8 and {"id", "correct", "confidence", "readouts"} <= set(records[0])
    assert set(records[0]["readouts"]) == {"greedy", "expected", "sampled"}
    monkeypatch.setattr(miscalibration, "build", None)  # a cached evaluation builds nothing
    assert miscalibration.evaluate(config, tmp_path, Path("tiny"), "base", "ood", samples=2) == records
    assert (tmp_path / "eval" / "base_ood_readouts_n2.jsonl").is_file()
