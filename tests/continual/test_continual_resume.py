"""The continual runner end to end on the tiny config: a run killed mid-sequence resumes to the same summary.

The kill is real (SIGKILL, no cleanup) and comes from a callback of the tests (:mod:`sigkill`) that the config injects
through the ``reverse`` stage's typed overrides, as any user callback would be.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from sigkill import ARMED, CLASS_PATH

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/continual/tiny.yaml"


def config_with_kill_switch(tmp_path: Path) -> Path:
    """The tiny config with the SIGKILL callback in the ``reverse`` stage (it fires only when armed)."""
    raw = yaml.safe_load(CONFIG.read_text())
    (reverse,) = [stage for stage in raw["stages"] if stage["name"] == "reverse"]
    reverse["overrides"] = {"trainer": {"callbacks": [{"class_path": CLASS_PATH}]}}
    path = tmp_path / "tiny_with_kill_switch.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_continual(config: Path, out: Path, armed: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "caopd_pl.commands.continual", "--config", str(config), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop(ARMED, None)
    env |= {ARMED: "1"} if armed else {}
    return subprocess.run([*command, "--calibration", "empirical"], cwd=REPO, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_summary(tmp_path):
    config = config_with_kill_switch(tmp_path)
    straight = run_continual(config, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = run_continual(config, tmp_path / "resumed", armed=True)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])  # SIGKILL during stage 2's training
    state = json.loads((tmp_path / "resumed/empirical/state.json").read_text())
    assert state["finished"] == ["arithmetic"]
    assert not (tmp_path / "resumed/empirical/continual_summary.json").exists()
    stage_one = (tmp_path / "resumed/empirical/01_arithmetic/eval/count.jsonl").read_text()

    resumed = run_continual(config, tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "resumed/empirical/01_arithmetic/eval/count.jsonl").read_text() == stage_one  # kept, not redone

    expected = json.loads((tmp_path / "straight/empirical/continual_summary.json").read_text())
    got = json.loads((tmp_path / "resumed/empirical/continual_summary.json").read_text())
    assert got == expected  # exact: fixed seeds, CPU, one thread

    matrices = got["matrices"]
    assert got["stages"] == ["base", "arithmetic", "reverse", "count"]
    assert got["tasks"] == ["arithmetic", "reverse", "count", "max"]
    for key in ("accuracy", "ece", "brier", "ocg", "mean_confidence", "spr"):
        assert len(matrices[key]) == 4 and all(len(row) == 4 for row in matrices[key]), key
    for key in ("accuracy", "ece", "brier", "ocg", "mean_confidence"):
        assert all(value is not None for row in matrices[key] for value in row), key
    assert set(got["derived"]) >= {"final_accuracy", "backward_transfer", "forgetting", "calibration_forgetting"}
    for name in ("heatmap_accuracy.png", "heatmap_ece.png", "curves.png"):
        image = matplotlib.image.imread(tmp_path / "resumed/empirical" / name)
        assert image.shape[0] > 100 and image.shape[1] > 100, name
    leftovers = [p for p in (tmp_path / "resumed").rglob("*.tmp")]
    assert not leftovers, leftovers
