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


TINY = REPO / "configs/continual/tiny.yaml"


def _no_work(*args, **kwargs):
    raise AssertionError("the runner went on with the run directory of another configuration")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.slow
def test_a_rerun_with_another_seed_does_not_reuse_the_first_runs_warm_start(tmp_path, capsys, monkeypatch):
    from caopd_pl.__main__ import main
    from caopd_pl.continual.config import load_config
    from caopd_pl.continual.runner import ContinualRunner

    monkeypatch.chdir(REPO)  # the config's fit_config is relative to the repository
    out = tmp_path / "run"
    ContinualRunner(load_config(TINY, out=str(out))).warm_start()  # seed 0's warm start; then the runner was killed
    monkeypatch.setattr(ContinualRunner, "evaluate", _no_work)
    capsys.readouterr()
    assert main(["continual", "--config", str(TINY), "--out", str(out), "--seed", "1"]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"caopd_pl continual: error: {out / 'base/state.json'} was written by a different ")
    assert "(seed is 0 there, 1 here)" in line


def test_a_changed_config_after_a_finished_stage_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from caopd_pl.__main__ import main
    from caopd_pl.continual.config import load_config
    from caopd_pl.continual.runner import ContinualRunner

    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    first = load_config(TINY, out=str(out))
    state = {"fingerprint": first.fingerprint(), "finished": ["arithmetic"], "settings": first.settings()}
    (out / "empirical").mkdir(parents=True)
    (out / "empirical/state.json").write_text(json.dumps(state))  # stage 1 of the seed-0 run finished
    monkeypatch.setattr(ContinualRunner, "warm_start", _no_work)  # refused before any work
    args = ["continual", "--config", str(TINY), "--out", str(out), "--calibration", "empirical", "--seed", "1"]
    assert main(args) == 2
    line = _one_line(capsys)
    assert f"{out / 'empirical/state.json'} was written by a different configuration (seed is 0 there, 1 here)" in line


def test_a_warm_start_no_state_file_vouches_for_is_refused(tmp_path, capsys, monkeypatch):
    from caopd_pl.__main__ import main

    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    (out / "base/student").mkdir(parents=True)
    (out / "base/student/config.json").write_text("{}")  # a run of a version before base/state.json
    assert main(["continual", "--config", str(TINY), "--out", str(out)]) == 2
    assert "holds a warm start that no state file ties to a configuration" in _one_line(capsys)
