"""``report``: the training code's calibration metrics over judged completions, written and printed."""

from __future__ import annotations

import json

import pytest
import torch

from caopd_pl.commands import report
from caopd_pl.metrics import calibration_summary


def test_report_writes_metrics_and_plot(tmp_path, capsys):
    rows = [
        {"completion": "A\nConfidence: 0.9", "correct": True},
        {"completion": "B\nConfidence: 80%", "correct": False},
        {"completion": "C without a confidence", "correct": True},
        {"completion": "D\nConfidence: 0.2", "correct": False},
    ]
    source = tmp_path / "judged.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n" + json.dumps({"completion": "x"}) + "\n")
    status = report.main(["--input", str(source), "--out", str(tmp_path / "rep")])
    assert status == 1  # two malformed lines, reported, the rest measured
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    expected = calibration_summary(
        torch.tensor([0.9, 0.8, 0.0, 0.2]),
        torch.tensor([True, False, True, False]),
        torch.tensor([True, True, False, True]),
    )
    assert metrics == pytest.approx({**expected, "malformed_lines": 2})
    assert metrics["format_adherence"] == pytest.approx(0.75)
    png = (tmp_path / "rep" / "reliability.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    captured = capsys.readouterr()
    assert "ece" in captured.out and "skipped line 5" in captured.err and "skipped line 6" in captured.err


def test_report_without_usable_lines(tmp_path):
    source = tmp_path / "empty.jsonl"
    source.write_text("\n")
    assert report.main(["--input", str(source), "--out", str(tmp_path / "rep")]) == 2
