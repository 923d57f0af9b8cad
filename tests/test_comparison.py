"""Before and after (caopd_pl.comparison): fit evaluates its starting model and compares it with the last validation."""

import json

import pytest
import torch
from helpers import metrics_rows, small_config

from caopd_pl import comparison
from caopd_pl.__main__ import main
from caopd_pl.readouts import ReadoutConfig


def _records(confidence: list[float], correct: list[bool]) -> list[dict]:
    return [
        {"confidence": c, "correct": ok, "parsed": True, "readouts": {"greedy": c, "expected": c / 2}}
        for c, ok in zip(confidence, correct)
    ]


def test_snapshot_table_and_files(tmp_path):
    both, greedy = ReadoutConfig("greedy", ("greedy", "expected")), ReadoutConfig("greedy", ("greedy",))
    before = comparison.snapshot(_records([1.0] * 4, [True, False, False, False]), both)
    after = comparison.snapshot(_records([0.9, 0.1, 0.2, 0.1], [True, False, False, False]), greedy)
    assert before["metrics"]["greedy"]["mean_confidence"] == pytest.approx(1.0)
    assert before["metrics"]["greedy"]["ece"] == pytest.approx(0.75)
    assert set(before["metrics"]) == {"greedy", "expected"} and before["n"] == 4
    text = comparison.table(before, after)
    assert text.splitlines()[0] == "before and after (4 validation prompts, greedy readout):"
    assert "  mean_confidence   1.000   0.325" in text and "  accuracy          0.250   0.250" in text
    assert comparison.write(before, after, tmp_path) == ["before_after.json", "before_after.png"]
    saved = json.loads((tmp_path / "before_after.json").read_text())
    assert saved["start"]["correct"] == [True, False, False, False] and saved["end"]["confidence"][0] == 0.9
    assert (tmp_path / "before_after.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_compares_the_warm_started_model_with_the_last_validation(tiny_run):
    (log_dir,) = tiny_run.glob("logs/version_*")
    saved = json.loads((log_dir / "before_after.json").read_text())
    checkpoint = torch.load(tiny_run / "checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["caopd"]["start_evaluation"] == saved["start"]  # a resumed run compares with the same start
    assert saved["start"]["n"] == saved["end"]["n"] == 8  # data.max_eval_prompts of the small config
    assert (log_dir / "before_after.png").stat().st_size > 0
    start_rows = [row for row in metrics_rows(tiny_run) if row.get("start/accuracy")]
    assert len(start_rows) == 1
    readout = saved["start"]["readout"]
    assert float(start_rows[0]["start/accuracy"]) == pytest.approx(saved["start"]["metrics"][readout]["accuracy"])


def test_a_run_that_validates_nothing_evaluates_no_start(tmp_path):
    assert main(["fit", "--config", str(small_config(tmp_path, max_epochs=1)), "--trainer.limit_val_batches", "0"]) == 0
    (log_dir,) = tmp_path.glob("logs/version_*")
    assert not (log_dir / "before_after.json").exists()
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False)["caopd"]["start_evaluation"] is None
