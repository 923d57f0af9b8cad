"""The continual runner reports every confidence readout: the primary readout's metrics stay where they were, each
readout the records carry gets its own ``by_readout`` entry, and ``model.readout`` set in a continual config reaches
evaluation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from caopd_pl.continual.config import load_config
from caopd_pl.continual.runner import ContinualRunner, summarize_records
from caopd_pl.files import read_jsonl
from caopd_pl.metrics import answer_tensors, calibration_summary, without_nan

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs/continual/tiny.yaml"


def records(correct: list[bool], greedy: list[float], expected: list[float]) -> list[dict]:
    """Evaluation records as the module writes them, with the greedy readout as the primary."""
    return [
        {"id": str(i), "correct": c, "parsed": True, "confidence": g, "readout": "greedy"}
        | {"readouts": {"greedy": g, "expected": e}}
        for i, (c, g, e) in enumerate(zip(correct, greedy, expected))
    ]


def summary_of(correct: list[bool], confidence: list[float]) -> dict:
    """The calibration summary of answers with these confidences, computed directly."""
    answers = [{"correct": c, "confidence": v, "parsed": True} for c, v in zip(correct, confidence)]
    return without_nan(calibration_summary(*answer_tensors(answers)))


def test_a_task_summary_keeps_the_primary_metrics_and_adds_every_readout():
    correct, greedy, expected = [True, False, True, False], [1.0, 1.0, 0.0, 0.0], [0.7, 0.2, 0.6, 0.4]
    got = summarize_records(records(correct, greedy, expected))
    assert {k: v for k, v in got.items() if k not in ("readout", "by_readout")} == summary_of(correct, greedy)
    assert got["readout"] == "greedy"
    assert got["by_readout"] == {"greedy": summary_of(correct, greedy), "expected": summary_of(correct, expected)}
    assert got["by_readout"]["expected"]["ece"] != got["ece"]


def test_records_written_before_readouts_summarize_as_before():
    old = [{"id": "0", "correct": True, "parsed": True, "confidence": 0.9}]
    assert summarize_records(old) == {**summary_of([True], [0.9]), "readout": "greedy", "by_readout": {}}


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    return ContinualRunner(load_config(TINY, out=str(tmp_path / "run")))


def rows(shift: float) -> list[dict]:
    # base + 3 stages, 4 tasks each; the expected readout is the greedy one moved by ``shift`` towards 0.5.
    out = []
    for stage in range(4):
        row = {}
        for task in ("arithmetic", "reverse", "count", "max"):
            correct = [True, False, stage % 2 == 0, True]
            greedy = [1.0, 1.0, 1.0, 0.0]
            row[task] = summarize_records(records(correct, greedy, [g + shift * (0.5 - g) for g in greedy]))
        out.append(row)
    return out


def test_sequence_summary_and_comparison_carry_every_readout(runner):
    summaries = {
        calibration: runner.summarize(calibration, rows(shift))
        for calibration, shift in [("none", 0.4), ("empirical", 1)]
    }
    empirical = summaries["empirical"]
    assert empirical["readout"] == "greedy" and list(empirical["by_readout"]) == ["greedy", "expected"]
    assert empirical["by_readout"]["greedy"] == {"matrices": empirical["matrices"], "derived": empirical["derived"]}
    expected = empirical["by_readout"]["expected"]
    assert expected["matrices"]["accuracy"] == empirical["matrices"]["accuracy"]  # one answer, other confidences
    assert expected["matrices"]["mean_confidence"] == [[0.5] * 4] * 4
    assert expected["derived"]["final_ece"] != empirical["derived"]["final_ece"]

    runner.write_comparison(summaries)
    table = json.loads((runner.out / "comparison.json").read_text())
    assert {k: v for k, v in table["none"].items() if k != "by_readout"} == summaries["none"]["derived"]
    assert table["empirical"]["by_readout"]["expected"] == expected["derived"]
    markdown = (runner.out / "comparison.md").read_text().splitlines()
    assert markdown[0].startswith("| calibration | final_accuracy |")  # the primary table first, as before
    assert (
        markdown[5] == "| calibration | readout | final_ece | calibration_forgetting | ece_backward_transfer | "
        "held_out_ece |"
    )
    assert markdown[7].startswith("| none | greedy | ") and markdown[10].startswith("| empirical | expected | ")


def run_continual(config: Path, out: Path) -> None:
    command = [sys.executable, "-m", "caopd_pl.commands.continual", "--config", str(config), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def one_stage_config(tmp_path: Path, readout: dict | None) -> Path:
    """The tiny config cut to its first stage and the held-out task, CaOPD only, with ``model.readout``."""
    raw = yaml.safe_load(TINY.read_text())
    raw |= {"stages": raw["stages"][:1], "calibrations": ["empirical"]}
    if readout is not None:
        raw["overrides"]["model"]["readout"] = readout
    path = tmp_path / f"config_{len(list(tmp_path.glob('config_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_readout_set_in_the_config_reaches_evaluation_and_leaves_training_alone(tmp_path):
    readout = {"primary": "expected", "report": ["greedy", "sampled"], "num_samples": 2}
    run_continual(one_stage_config(tmp_path, readout), tmp_path / "all")
    run_continual(one_stage_config(tmp_path, {"report": ["greedy"]}), tmp_path / "greedy")  # the old evaluation

    for task in ("arithmetic", "max"):
        answers = read_jsonl(tmp_path / f"all/empirical/01_arithmetic/eval/{task}.jsonl")
        assert {r["readout"] for r in answers} == {"expected"}
        assert all(set(r["readouts"]) == {"greedy", "expected", "sampled"} for r in answers)
        assert all(r["confidence"] == r["readouts"]["expected"] for r in answers)
        plain = read_jsonl(tmp_path / f"greedy/empirical/01_arithmetic/eval/{task}.jsonl")
        assert [r["completion"] for r in answers] == [r["completion"] for r in plain]
    summary = json.loads((tmp_path / "all/empirical/continual_summary.json").read_text())
    assert summary["readout"] == "expected" and list(summary["by_readout"]) == ["greedy", "expected", "sampled"]
    assert summary["matrices"] == summary["by_readout"]["expected"]["matrices"]
    # Computing more readouts changes neither the trained weights nor the greedy figures.
    weights = [
        (tmp_path / run / "empirical/01_arithmetic/student/model.safetensors").read_bytes() for run in ("all", "greedy")
    ]
    assert weights[0] == weights[1]
    plain = json.loads((tmp_path / "greedy/empirical/continual_summary.json").read_text())
    assert summary["by_readout"]["greedy"] == plain["by_readout"]["greedy"]
    assert plain["matrices"] == plain["by_readout"]["greedy"]["matrices"] and list(plain["by_readout"]) == ["greedy"]


@pytest.mark.slow
def test_the_rl_baselines_run_as_continual_sequences_by_name(tmp_path):
    # Issue 27: the continual runner takes the methods by name beside the calibrations, each in its own OUT/<name>.
    raw = yaml.safe_load(TINY.read_text())
    raw |= {"stages": raw["stages"][:1], "calibrations": ["empirical", "rlcr"]}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    run_continual(config, tmp_path / "out")
    for name in ("empirical", "rlcr"):
        summary = json.loads((tmp_path / f"out/{name}/continual_summary.json").read_text())
        assert summary["matrices"]["accuracy"], name
    trained = read_jsonl(tmp_path / "out/rlcr/01_arithmetic/eval/arithmetic.jsonl")
    distilled = read_jsonl(tmp_path / "out/empirical/01_arithmetic/eval/arithmetic.jsonl")
    assert [r["completion"] for r in trained] != [r["completion"] for r in distilled]  # another method trained it
    metrics = (tmp_path / "out/rlcr/01_arithmetic/train").rglob("metrics.csv")
    assert any("rl/reward" in path.read_text() or "reward" in path.read_text() for path in metrics)
    assert (tmp_path / "out/comparison.md").exists()
