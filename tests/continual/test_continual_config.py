"""Every continual YAML parses through jsonargparse; bad keys and values are one line naming them; the state file
refuses a mixed resume."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from caopd_pl.__main__ import main
from caopd_pl.continual.config import load_config
from caopd_pl.continual.runner import instantiate_task
from caopd_pl.continual.storage import RunState
from caopd_pl.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs/continual").glob("*.yaml"))
TINY = REPO / "configs/continual/tiny.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_continual_config_parses(path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(path)
    assert (REPO / config.fit_config).exists()
    assert len(config.stages) >= 2 and config.held_out
    assert config.overrides["trainer"]["enable_progress_bar"] is False  # typed values, not CLI strings
    for stage in (*config.stages, *config.held_out):
        task = instantiate_task(stage.task)
        assert stage.split in task.splits()
    assert config.fingerprint() == load_config(path, out="elsewhere").fingerprint()


def test_stage_overrides_are_nested_values():
    config = load_config(TINY)
    count = [stage for stage in config.stages if stage.name == "count"][0]
    assert count.overrides == {"data": {"prompts_per_epoch": 2}}
    assert config.overrides["model"]["warm_start"] == {"steps": 4, "batch_size": 8}


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_changed_override_changes_the_fingerprint(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    raw = yaml.safe_load(TINY.read_text())
    before = load_config(write(tmp_path, raw)).fingerprint()
    raw["stages"][1]["overrides"] = {"trainer": {"max_epochs": 2}}
    assert load_config(write(tmp_path, raw)).fingerprint() != before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"stagez": []}, "stagez"),
        ({"calibrations": ["beta"]}, "calibrations"),
        ({"seed": "x"}, "seed"),
        ({"overrides": ["--trainer.max_epochs=1"]}, "overrides"),  # the old format: CLI strings
        ({"warm_start": "some"}, "warm_start"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, change, named):
    raw = yaml.safe_load(TINY.read_text())
    with pytest.raises(UsageError, match=named):
        load_config(write(tmp_path, {**raw, **change}))


def test_bad_stage_key_and_repeated_names_are_named(tmp_path):
    raw = yaml.safe_load(TINY.read_text())
    with pytest.raises(UsageError, match=r"stages.*budget"):
        load_config(write(tmp_path, {**raw, "stages": [{**raw["stages"][0], "budget": 3}]}))
    with pytest.raises(UsageError, match="unique"):
        load_config(write(tmp_path, {**raw, "held_out": [{**raw["held_out"][0], "name": "arithmetic"}]}))


def test_command_errors_are_one_line_with_status_2(tmp_path, capsys):
    raw = yaml.safe_load(TINY.read_text())
    assert main(["continual", "--config", str(write(tmp_path, {**raw, "sead": 1}))]) == 2
    assert main(["continual", "--config", str(TINY), "--calibration", "beta"]) == 2
    assert main(["continual", "--config", str(tmp_path / "missing.yaml")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(line.startswith("caopd_pl continual: error: ") for line in lines)
    assert "sead" in lines[0] and "beta" in lines[1] and "no such file" in lines[2]


def test_help_documents_every_field_without_importing_torch():
    code = (
        "import sys; from caopd_pl.__main__ import main\n"
        "try: main(['continual', '--help'])\n"
        "except SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'continual --help imported torch'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    for option, docstring in [
        ("--overrides", "nested as in a fit config"),
        ("--overrides", "The confidence readouts every evaluation computes are ``model.readout``"),
        ("--warm_start", "Supervised warm start before stage 1"),
        ("--seed", "stage i (1-based) uses seed + i"),
        ("--calibration ", "run only this one of the config's calibrations"),
    ]:
        assert option in result.stdout and docstring in " ".join(result.stdout.split()), option


def test_state_file_refuses_another_config(tmp_path):
    state = RunState(tmp_path / "state.json", "abc")
    state.mark_finished("one")
    assert RunState(tmp_path / "state.json", "abc").finished == ["one"]
    with pytest.raises(ValueError, match="different configuration"):
        RunState(tmp_path / "state.json", "xyz")
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind
