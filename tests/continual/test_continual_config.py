"""Every continual YAML parses; bad keys are named; the storage helpers are atomic and refuse a mixed resume."""

from pathlib import Path

import pytest
import yaml

from caopd_pl.continual.config import load_config
from caopd_pl.continual.runner import instantiate_task
from caopd_pl.continual.storage import RunState, atomic_write_json

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs/continual").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_continual_config_parses(path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(path)
    assert (REPO / config.fit_config).exists()
    assert len(config.stages) >= 3 and config.held_out
    for stage in (*config.stages, *config.held_out):
        task = instantiate_task(stage.task)
        assert stage.split in task.splits()
    assert config.fingerprint() == load_config(path, out="elsewhere").fingerprint()


def test_bad_keys_are_named(tmp_path):
    raw = yaml.safe_load((REPO / "configs/continual/tiny.yaml").read_text())
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**raw, "stagez": []}))
    with pytest.raises(ValueError, match="stagez"):
        load_config(path)
    path.write_text(yaml.safe_dump({**raw, "calibrations": ["beta"]}))
    with pytest.raises(ValueError, match="calibrations"):
        load_config(path)
    stage = {**raw["stages"][0], "budget": 3}
    path.write_text(yaml.safe_dump({**raw, "stages": [stage]}))
    with pytest.raises(ValueError, match=r"stages\[0\].*budget"):
        load_config(path)


def test_state_file_is_atomic_and_refuses_another_config(tmp_path):
    state = RunState(tmp_path / "state.json", "abc")
    state.mark_finished("one")
    assert RunState(tmp_path / "state.json", "abc").finished == ["one"]
    with pytest.raises(ValueError, match="different configuration"):
        RunState(tmp_path / "state.json", "xyz")
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "x.json"]
