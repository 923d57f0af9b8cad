"""The miscalibration benchmark's bookkeeping: per-seed aggregation and the per-level breakdown."""

import importlib.util
import math
from pathlib import Path

import pytest

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
